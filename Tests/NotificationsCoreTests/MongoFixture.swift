import MongoStore
import NIOPosix
import TestSupport

/// A MongoDB-wire server of its own and a small client pool, for store-level tests.
func withMongoPool(_ body: @Sendable (MongoClientPool) async throws -> Void) async throws {
    try await TestServers.fixtures.withPermit {
        let server = try await TestServers.startMongo()
        defer { server.stop() }
        let pool = try MongoClientPool(
            uriString: "mongodb://127.0.0.1:\(server.port)/t?maxPoolSize=2", operationTimeoutMilliseconds: 2000,
            eventLoopGroup: MultiThreadedEventLoopGroup.singleton)
        try await body(pool)
        await pool.shutdown()
    }
}
