import Foundation
import HTTPTypes
import HummingbirdTesting
import Logging
import MongoStore
import NIOPosix
import NotificationsCore
import NotificationsHTTP
import RedisClient
import Testing
import TestSupport

/// Helpers for the tests of writes whose outcome is unknown: a second instance on the same
/// servers, retrying until an answer changes, and a direct Redis connection for inspection.
extension Harness {
    /// Another instance of the service (its own pools, memory and caches) on the same servers.
    @discardableResult
    func withOtherInstance<T: Sendable>(
        configure: (inout Settings) -> Void = { _ in }, _ body: @Sendable (AppEnvironment) async throws -> T
    ) async throws -> T {
        var settings = environment.settings
        configure(&settings)
        let other = try AppEnvironment.make(settings: settings, logger: Logger(label: "other"), eventLoopGroup: MultiThreadedEventLoopGroup.singleton)
        if let redisCluster = other.redisCluster { await redisCluster.refresh() }
        let result: T
        do {
            result = try await body(other)
        } catch {
            other.closeRedis()
            await other.mongoPool.shutdown()
            throw error
        }
        other.closeRedis()
        await other.mongoPool.shutdown()
        return result
    }

    /// A separate connection to the test's Redis, for looking at keys or injecting faults.
    func withRedisAdmin<T: Sendable>(_ body: @Sendable (RedisConnectionPool) async throws -> T) async throws -> T {
        var configuration = try RedisConfiguration(url: "redis://127.0.0.1:\(redis.port)", operationTimeoutMilliseconds: 2000)
        configuration.connectionCount = 1
        let admin = RedisConnectionPool(configuration: configuration, eventLoopGroup: MultiThreadedEventLoopGroup.singleton, logger: Logger(label: "admin"))
        defer { admin.close() }
        return try await body(admin)
    }

    func unreadCount(_ user: String) async throws -> Int? {
        try await client.get("/v1/users/\(user)/notifications/unread-count").jsonObject()["unreadCount"] as? Int
    }
}

/// A 400 `validation_failed` problem whose detail names `field` first.
func expectValidationProblem(_ response: TestResponse, field: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
    #expect(response.status == .badRequest, sourceLocation: sourceLocation)
    let problem = try response.jsonObject()
    #expect(problem["code"] as? String == "validation_failed", sourceLocation: sourceLocation)
    #expect((problem["detail"] as? String)?.hasPrefix(field + ":") == true, "\(problem)", sourceLocation: sourceLocation)
}
