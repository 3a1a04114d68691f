import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import MongoStore
@testable import NotificationsCore
import NotificationsHTTP
import Testing
import TestSupport

/// Unread counters and late inserts when a MongoDB write times out after the server applied it
/// (issue 7, items 7, 8 and 12). The fault is real: the MongoDB-wire server is frozen with
/// SIGSTOP past the 1.5 s deadline, then resumed, and applies what it had received.
@Suite("Unread counters and late inserts: writes of unknown outcome")
struct CounterUnknownOutcomeTests {
    static func counter(_ harness: Harness, _ user: String) async throws -> BSONDocument? {
        try await harness.environment.mongoPool.collection("user_counters").findOne(["_id": .string(user)])
    }

    /// Reads the user's count (each read steps the reconciliation) until the stored counter is no longer stale.
    static func reconciledCounter(_ harness: Harness, _ user: String) async throws -> BSONDocument? {
        try await retrying(for: .seconds(20), every: .milliseconds(400)) {
            _ = try await harness.unreadCount(user)
            return try await counter(harness, user)
        } until: { $0?["stale"]?.bool == false }
    }

    /// Item 7: read, read-all and delete that time out but are applied; the client's retry changes nothing.
    @Test(arguments: ["read", "read-all", "delete"])
    func aCountedWriteAppliedAfterItsTimeoutIsRecounted(operation: String) async throws {
        try await withHarness { harness in
            let user = "late-\(operation)"
            let id = try await harness.client.create(recipient: user)["id"] as? String ?? ""
            #expect(try await harness.unreadCount(user) == 1)
            let (method, path): (HTTPRequest.Method, String) = switch operation {
            case "read": (.post, "/v1/users/\(user)/notifications/\(id)/read")
            case "read-all": (.post, "/v1/users/\(user)/notifications/read-all")
            default: (.delete, "/v1/users/\(user)/notifications/\(id)")
            }
            harness.mongo.pause()
            let frozen = try await harness.client.execute(uri: path, method: method, headers: authorized)
            harness.mongo.resume()
            #expect(frozen.status == .serviceUnavailable)
            let retried = try await retrying(for: .seconds(10)) {
                try await harness.client.execute(uri: path, method: method, headers: authorized)
            } until: { $0.status != .serviceUnavailable }
            #expect(retried.status != .serviceUnavailable)
            let count = try await retrying(for: .seconds(10)) { try await harness.unreadCount(user) } until: { $0 == 0 }
            #expect(count == 0, "the counter must not stay one too high")
        }
    }

    /// Item 8: the write of unknown outcome happens on another instance; this one (and a fresh
    /// one) must converge to the true count within FEED_CACHE_TTL_SECONDS of MongoDB answering.
    @Test func everyInstanceConvergesAfterAnotherInstancesWriteOfUnknownOutcome() async throws {
        try await withHarness(configure: { $0.feedCacheTTLSeconds = 3 }) { harness in
            let user = "shared-counter"
            let id = try await harness.client.create(recipient: user)["id"] as? String ?? ""
            _ = try await harness.client.create(recipient: user)
            #expect(try await harness.unreadCount(user) == 2)
            try await harness.withOtherInstance { other in
                // A running instance: connected to MongoDB before it freezes (a first connection would fail before sending anything).
                _ = try await other.services.feed.page(userId: user, limit: 1, cursor: nil, unreadOnly: false)
                harness.mongo.pause()
                await #expect(throws: StoreError.self) { _ = try await other.services.feed.markRead(userId: user, id: id) }
                harness.mongo.resume()
                let resumed = ContinuousClock.now
                let count = try await retrying(for: .seconds(8)) { try await harness.unreadCount(user) } until: { $0 == 1 }
                #expect(count == 1)
                // Within the cache TTL (3 s here) of MongoDB answering, plus the marks' two confirmations a second apart.
                #expect(ContinuousClock.now - resumed < .seconds(3 + 4))
            }
            try await harness.withOtherInstance { fresh in
                let body = try await fresh.services.feed.unreadCount(userId: user).body
                #expect(String(decoding: body, as: UTF8.self) == #"{"unreadCount":1}"#, "a restarted instance does not forget")
            }
            // The counter itself is reconciled, not recounted forever.
            let counter = try await Self.reconciledCounter(harness, user)
            #expect(counter?["stale"]?.bool == false)
            #expect(counter?["unread"]?.int64 == 1)
        }
    }

    /// Item 8: a recount races creates (their `$inc` land during it): the reconciled counter
    /// neither loses nor doubles them.
    @Test func aRecountRacingCreatesNeitherLosesNorDoublesThem() async throws {
        try await withHarness(configure: { $0.feedCacheTTLSeconds = 1 }) { harness in
            let user = "racing"
            for _ in 0..<3 { _ = try await harness.client.create(recipient: user) }
            harness.mongo.pause()
            let frozen = try await harness.client.execute(uri: "/v1/users/\(user)/notifications/read-all", method: .post, headers: authorized)
            harness.mongo.resume()
            #expect(frozen.status == .serviceUnavailable)
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    for _ in 0..<12 { _ = try await harness.client.create(recipient: user) }
                }
                group.addTask {
                    for _ in 0..<12 {
                        _ = try await harness.unreadCount(user)
                        try await Task.sleep(for: .milliseconds(150))
                    }
                }
                try await group.waitForAll()
            }
            let counter = try await Self.reconciledCounter(harness, user)
            #expect(counter?["stale"]?.bool == false)
            #expect(counter?["unread"]?.int64 == 12)
            #expect(try await harness.unreadCount(user) == 12)
        }
    }

    /// Item 12: creates that time out during an outage are undone once MongoDB is back, by one
    /// worker in a few batched deletes (not one task and one delete per document).
    @Test func lateInsertsAfterAnOutageAreUndoneInFewBatches() async throws {
        try await withHarness { harness in
            harness.mongo.pause()
            // Twenty creates at once (through the feature: the test's HTTP client sends one request at a time).
            let failures = await withTaskGroup(of: Bool.self) { group in
                for index in 0..<20 {
                    group.addTask {
                        do {
                            _ = try await harness.environment.services.feed.create(NewNotification(recipientId: "outage", type: "t\(index)"))
                            return false
                        } catch {
                            return error is StoreError
                        }
                    }
                }
                return await group.reduce(into: 0) { $0 += $1 ? 1 : 0 }
            }
            #expect(failures == 20)
            // Group commit: the creates that reached MongoDB (an outcome unknown) wait for cleanup;
            // those still queued behind them when their time ran out were never sent.
            let sent = try #require(try await harness.metric("background_writes_pending", #"queue="late_inserts""#))
            #expect(sent >= 1 && sent <= 20)
            harness.mongo.resume()
            let pending = try await retrying(for: .seconds(20)) {
                try await harness.metric("background_writes_pending", #"queue="late_inserts""#)
            } until: { $0 == 0 }
            #expect(pending == 0)
            let feed = try await harness.client.get("/v1/users/outage/notifications").jsonObject()
            #expect((feed["items"] as? [Any])?.count == 0, "nothing the clients were told failed is stored")
            #expect(try await harness.unreadCount("outage") == 0)
            let batches = harness.environment.store.lateInserts.queue.batchesSent
            #expect(batches >= 2 && batches <= 8, "two confirmations of one batch, plus retries while MongoDB was frozen: \(batches)")
        }
    }
}
