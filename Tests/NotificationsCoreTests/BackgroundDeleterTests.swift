import Logging
import MongoStore
import NIOPosix
@testable import NotificationsCore
import Testing
import TestSupport

@Suite("Late writes are undone")
struct BackgroundDeleterTests {
    @Test func aWriteAppliedAfterItsRequestFailedIsRemoved() async throws {
        try await TestServers.fixtures.withPermit {
            let server = try await TestServers.startMongo()
            defer { server.stop() }
            let pool = try MongoClientPool(
                uriString: "mongodb://127.0.0.1:\(server.port)/t?maxPoolSize=2", operationTimeoutMilliseconds: 2000,
                eventLoopGroup: MultiThreadedEventLoopGroup.singleton)
            let collection = pool.collection("notifications")
            // As if a timed-out insert had been applied by the server after all.
            try await collection.insertOne(["_id": "late", "recipientId": "u"])
            try await collection.insertOne(["_id": "kept", "recipientId": "u"])
            BackgroundDeleter(logger: Logger(label: "test")).deleteEventually(["_id": "late"], from: collection)
            let deadline = ContinuousClock.now + .seconds(6)
            while try await collection.findOne(["_id": "late"]) != nil && ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(200))
            }
            #expect(try await collection.findOne(["_id": "late"]) == nil)
            #expect(try await collection.findOne(["_id": "kept"]) != nil)
            await pool.shutdown()
        }
    }
}
