import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import MongoStore
import NIOCore
import NIOPosix
import NotificationsCore
import NotificationsHTTP
import RedisClient
import Testing
import TestSupport

@Suite("Feed cache and distributed locks, with Redis up and down")
struct CacheAndLockTests {
    static let xCache = HTTPField.Name("X-Cache")!

    @Test func missThenHitThenEveryWriteIsSeenByTheNextRead() async throws {
        try await withHarness { harness in
            let client = harness.client
            let first = try await client.create(recipient: "cached")
            let miss = try await client.get("/v1/users/cached/notifications")
            #expect(miss.headers[Self.xCache] == "miss")
            let hit = try await client.get("/v1/users/cached/notifications")
            #expect(hit.headers[Self.xCache] == "hit")
            #expect(hit.text == miss.text)
            #expect(try await client.get("/v1/users/cached/notifications/unread-count").headers[Self.xCache] == "miss")
            #expect(try await client.get("/v1/users/cached/notifications/unread-count").headers[Self.xCache] == "hit")

            // Create, read, read-all, delete: each is visible to the very next read.
            let second = try await client.create(recipient: "cached")
            var feed = try await client.get("/v1/users/cached/notifications")
            #expect(feed.headers[Self.xCache] == "miss")
            #expect(try feed.jsonObject()["unreadCount"] as? Int == 2)
            _ = try await client.execute(uri: "/v1/users/cached/notifications/\(first["id"]!)/read", method: .post, headers: authorized)
            #expect(try await client.get("/v1/users/cached/notifications/unread-count").jsonObject()["unreadCount"] as? Int == 1)
            _ = try await client.execute(uri: "/v1/users/cached/notifications/read-all", method: .post, headers: authorized)
            #expect(try await client.get("/v1/users/cached/notifications?unreadOnly=true").jsonObject()["unreadCount"] as? Int == 0)
            _ = try await client.execute(uri: "/v1/users/cached/notifications/\(second["id"]!)", method: .delete, headers: authorized)
            feed = try await client.get("/v1/users/cached/notifications")
            #expect((try feed.jsonObject()["items"] as? [[String: Any]])?.map { $0["id"] as? String } == [first["id"] as? String])
        }
    }

    @Test func writesOnAnotherInstanceInvalidateThisInstancesCache() async throws {
        try await withHarness { harness in
            _ = try await harness.client.create(recipient: "shared")
            _ = try await harness.client.get("/v1/users/shared/notifications")
            #expect(try await harness.client.get("/v1/users/shared/notifications").headers[Self.xCache] == "hit")
            // Another instance (its own pools and caches) writes for the same user.
            let other = try AppEnvironment.make(
                settings: harness.environment.settings, logger: Logger(label: "other"), eventLoopGroup: MultiThreadedEventLoopGroup.singleton)
            defer { other.closeRedis() }
            _ = try await other.services.feed.create(NewNotification(recipientId: "shared", type: "x"))
            let after = try await harness.client.get("/v1/users/shared/notifications")
            #expect(after.headers[Self.xCache] == "miss")
            #expect(try after.jsonObject()["unreadCount"] as? Int == 2)
            await other.mongoPool.shutdown()
        }
    }

    @Test func redisDownReadsMongoWithBypass() async throws {
        try await withHarness { harness in
            _ = try await harness.client.create(recipient: "bypass")
            harness.redis.kill()
            for _ in 0..<8 {
                let response = try await harness.client.get("/v1/users/bypass/notifications")
                #expect(response.status == .ok)
                #expect(response.headers[Self.xCache] == "bypass")
                #expect(try response.jsonObject()["unreadCount"] as? Int == 1)
            }
            #expect(try await harness.metric("redis_operations_fallback_total", #"operation="feed_cache""#) ?? 0 >= 8)
            // Writes still work and are visible at once (MongoDB is read directly).
            _ = try await harness.client.create(recipient: "bypass")
            #expect(try await harness.client.get("/v1/users/bypass/notifications").jsonObject()["unreadCount"] as? Int == 2)
        }
    }

    @Test func mongoDownServesTheCachedCopyElse503() async throws {
        try await withHarness { harness in
            _ = try await harness.client.create(recipient: "warm")
            _ = try await harness.client.get("/v1/users/warm/notifications")
            harness.mongo.kill()
            let cached = try await harness.client.get("/v1/users/warm/notifications")
            #expect(cached.status == .ok)
            #expect(cached.headers[Self.xCache] == "hit")
            let cold = try await harness.client.get("/v1/users/cold/notifications")
            #expect(cold.status == .serviceUnavailable)
            #expect(try cold.jsonObject()["code"] as? String == "storage_unavailable")
        }
    }

    @Test func outOfMemoryRedisLeavesTheCacheStaleForAtMostTheTTL() async throws {
        try await withHarness(configure: { $0.feedCacheTTLSeconds = 2 }) { harness in
            _ = try await harness.client.create(recipient: "oom")
            _ = try await harness.client.get("/v1/users/oom/notifications")
            let admin = RedisConnectionPool(
                configuration: try RedisConfiguration(url: "redis://127.0.0.1:\(harness.redis.port)"), eventLoopGroup: MultiThreadedEventLoopGroup.singleton,
                logger: Logger(label: "admin"))
            defer { admin.close() }
            _ = try await admin.send(RedisCommand("CONFIG", ["SET", "maxmemory", "1"]))
            #expect(try await harness.client.create(recipient: "oom")["id"] != nil, "writes go on")
            let deadline = ContinuousClock.now + .seconds(4)
            var fresh = false
            while ContinuousClock.now < deadline {
                if try await harness.client.get("/v1/users/oom/notifications").jsonObject()["unreadCount"] as? Int == 2 {
                    fresh = true
                    break
                }
                try await Task.sleep(for: .milliseconds(200))
            }
            #expect(fresh, "the stale entry must be gone after FEED_CACHE_TTL_SECONDS")
        }
    }

    @Test func readAllWaitsForTheLockThenAnswers409LockBusy() async throws {
        try await withHarness(configure: { $0.lockWaitMilliseconds = 300 }) { harness in
            _ = try await harness.client.create(recipient: "locked")
            // Another holder has the lock (as a concurrent read-all on another instance would).
            _ = try await harness.environment.redisPool!.send(.set("lock:bulk:{locked}", Array("someone".utf8), ttlMilliseconds: 5000))
            let started = ContinuousClock.now
            let busy = try await harness.client.execute(uri: "/v1/users/locked/notifications/read-all", method: .post, headers: authorized)
            #expect(busy.status == .conflict)
            #expect(try busy.jsonObject()["code"] as? String == "lock_busy")
            #expect(busy.headers[.retryAfter] == "1")
            #expect(ContinuousClock.now - started >= .milliseconds(250))
            // Released by its holder: the next read-all runs.
            _ = try await harness.environment.redisPool!.send(.del(["lock:bulk:{locked}"]))
            let done = try await harness.client.execute(uri: "/v1/users/locked/notifications/read-all", method: .post, headers: authorized)
            #expect(try done.jsonObject()["updated"] as? Int == 1)
            // The lock was released by compare-and-delete.
            #expect(try await harness.environment.redisPool!.send(.get("lock:bulk:{locked}")) == .null)
        }
    }

    @Test func concurrentReadAllsOfOneUserDoTheWorkOnce() async throws {
        try await withHarness(configure: { $0.lockWaitMilliseconds = 5000 }) { harness in
            for _ in 0..<3 { _ = try await harness.client.create(recipient: "racer") }
            let updated = try await withThrowingTaskGroup(of: Int.self) { group in
                for _ in 0..<4 {
                    group.addTask {
                        let response = try await harness.client.execute(uri: "/v1/users/racer/notifications/read-all", method: .post, headers: authorized)
                        return try response.jsonObject()["updated"] as? Int ?? -1
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(updated.sorted() == [0, 0, 0, 3])
        }
    }

    @Test func redisDownLocksFailOpenOrClosed() async throws {
        try await withHarness { harness in
            _ = try await harness.client.create(recipient: "nolock")
            harness.redis.kill()
            let response = try await harness.client.execute(uri: "/v1/users/nolock/notifications/read-all", method: .post, headers: authorized)
            #expect(try response.jsonObject()["updated"] as? Int == 1, "fail-open: proceeds without the lock")
            #expect(harness.logMessages.contains { $0.hasPrefix("Proceeding without lock") })
        }
        try await withHarness(configure: {
            $0.redisFailOpen = false
            // An unlimited key skips the rate limiter, so the lock is what meets the outage.
            $0.rateLimitPolicies = [RateLimitPolicy(name: "*", limit: 100, windowMilliseconds: 1000), RateLimitPolicy(name: "other", limit: nil, windowMilliseconds: 1000)]
        }) { harness in
            harness.redis.kill()
            let response = try await harness.client.execute(
                uri: "/v1/users/nolock/notifications/read-all", method: .post, headers: [.authorization: "Bearer other-secret"])
            #expect(response.status == .serviceUnavailable)
            #expect(try response.jsonObject()["code"] as? String == "lock_unavailable")
            #expect(Int(response.headers[.retryAfter] ?? "") ?? 0 >= 1)
        }
    }
}
