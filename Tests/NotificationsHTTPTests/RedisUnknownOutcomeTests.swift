import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import NIOPosix
import NotificationsCore
import NotificationsHTTP
import RedisClient
import Resilience
import Testing
import TestSupport

/// Locks, breaker accounting and cache invalidation when Redis stalls or a reply is lost
/// (issue 7, items 9, 10 and 11), against a real redis-server frozen with SIGSTOP.
@Suite("Redis: writes of unknown outcome, breaker accounting, essential invalidation")
struct RedisUnknownOutcomeTests {
    static let unlimitedKey: HTTPFields = [.authorization: "Bearer other-secret"]

    /// Item 9: the lock's `SET NX` times out but Redis applies it when it resumes. Without the
    /// background release, the user's read-all would be 409 `lock_busy` for LOCK_TTL_MS.
    @Test func aLockAcquisitionOfUnknownOutcomeLeavesNoGhostLock() async throws {
        try await withHarness(configure: {
            $0.lockWaitMilliseconds = 300
            // An unlimited key skips the rate limiter, so the lock's SET is the call that stalls.
            $0.rateLimitPolicies = [RateLimitPolicy(name: "*", limit: 10_000, windowMilliseconds: 1000), RateLimitPolicy(name: "other", limit: nil, windowMilliseconds: 1000)]
        }) { harness in
            _ = try await harness.client.create(recipient: "ghost")
            // As in a running service, the acquire script is already loaded: the stalled call is the EVALSHA itself.
            #expect(try await harness.client.execute(uri: "/v1/users/ghost/notifications/read-all", method: .post, headers: Self.unlimitedKey).status == .ok)
            harness.redis.pause()
            let first = try await harness.client.execute(uri: "/v1/users/ghost/notifications/read-all", method: .post, headers: Self.unlimitedKey)
            harness.redis.resume()
            #expect(first.status == .ok, "fail-open: proceeds without the lock")
            let second = try await retrying(for: .seconds(3)) {
                try await harness.client.execute(uri: "/v1/users/ghost/notifications/read-all", method: .post, headers: Self.unlimitedKey)
            } until: { $0.status == .ok }
            // Redis applied the stalled SET NX when it resumed (RedisClientTests.aTimedOutCommandMayStillBeApplied);
            // the release with our token (itself possibly stalled, and applied after it) removed it.
            #expect(second.status == .ok, "not lock_busy for the ghost lock's whole lease")
            #expect(try await harness.withRedisAdmin { try await $0.send(.get("lock:bulk:{ghost}")) } == .null)
        }
    }

    /// Item 9: an extension that finds the lock gone marks the lease lost; fencing tokens grow.
    @Test func aLostLeaseIsDetectedAndFencingTokensGrow() async throws {
        try await withHarness { harness in
            let locks = LockManager(gateway: harness.environment.gateway, ttl: .milliseconds(300), wait: .milliseconds(100),
                logger: Logger(label: "lock", factory: { _ in harness.logs }))
            let first = try await locks.withLock("fenced") { lease in lease.fencingToken }
            let (second, lost) = try await locks.withLock("fenced") { lease in
                // The lock vanishes under its holder (as when the holder was paused past its lease).
                _ = try await harness.withRedisAdmin { try await $0.send(.del(["lock:{fenced}"])) }
                try await Task.sleep(for: .milliseconds(400))
                return (lease.fencingToken, lease.isLost)
            }
            #expect(first != nil && second != nil && (second ?? 0) > (first ?? 0))
            #expect(lost)
            #expect(harness.logMessages.contains { $0.hasPrefix("Lock lease lost") })
        }
    }

    /// Item 10: five calls pipelined on a connection that stalls are one failure; calls whose
    /// callers give up are none. Before, either opened a circuit with a threshold of 5.
    @Test func oneStalledConnectionIsOneFailureAndCancellationIsNone() async throws {
        try await withHarness { harness in
            // The deadline is long enough that, on a loaded machine, the callers of the second
            // half are cancelled well before it: a timeout there would be a real failure.
            var configuration = try RedisConfiguration(url: "redis://127.0.0.1:\(harness.redis.port)", operationTimeoutMilliseconds: 2000)
            configuration.connectionCount = 1
            let pool = RedisConnectionPool(configuration: configuration, eventLoopGroup: MultiThreadedEventLoopGroup.singleton, logger: Logger(label: "pool"))
            defer { pool.close() }
            let gateway = RedisGateway(
                pool: pool, configuration: CircuitBreakerConfiguration(failureThreshold: 5), failOpen: true,
                metrics: harness.environment.services.metrics, logger: Logger(label: "gateway"))
            #expect(await gateway.call(.healthCheck, key: "ping") { try await $0.send(.ping) } == .simpleString("PONG"))
            harness.redis.pause()
            await withTaskGroup(of: Void.self) { group in
                for _ in 0..<5 { group.addTask { _ = await gateway.call(.feedCache, key: "ping") { try await $0.send(.ping) } } }
            }
            #expect(gateway.breakers.breaker().consecutiveFailures == 1)
            #expect(gateway.state == .closed)
            let callers = (0..<5).map { _ in Task { await gateway.call(.feedCache, key: "ping") { try await $0.send(.ping) } } }
            let started = ContinuousClock.now
            try await Task.sleep(for: .milliseconds(100))
            for caller in callers { caller.cancel() }
            let cancelledAfter = ContinuousClock.now - started
            for caller in callers { _ = await caller.value }
            #expect(gateway.breakers.breaker().consecutiveFailures == 1, "a cancelled call says nothing about Redis (cancelled after \(cancelledAfter))")
            #expect(gateway.state == .closed)
            harness.redis.resume()
        }
    }

    /// Item 11: a write during an operator's drill (circuit forced open, Redis fine) still
    /// invalidates the cache, so the feed is fresh the moment the drill ends.
    @Test func invalidationGoesThroughAForcedOpenCircuit() async throws {
        try await withHarness { harness in
            let xCache = HTTPField.Name("X-Cache")!
            _ = try await harness.client.create(recipient: "drill")
            _ = try await harness.client.get("/v1/users/drill/notifications")
            #expect(try await harness.client.get("/v1/users/drill/notifications").headers[xCache] == "hit")
            harness.environment.gateway.breakers.forceOpenAll()
            _ = try await harness.client.create(recipient: "drill")
            harness.environment.gateway.breakers.resetAll()
            let after = try await harness.client.get("/v1/users/drill/notifications")
            #expect(after.headers[xCache] == "miss")
            #expect(try after.jsonObject()["unreadCount"] as? Int == 2)
            // The version key lives twice the entry TTL (FEED_CACHE_TTL_SECONDS, 30 s here), refreshed by every write.
            let ttl = try await harness.withRedisAdmin { try await $0.send(RedisCommand("PTTL", ["feed:{drill}:v"])) }
            guard case .integer(let milliseconds) = ttl else {
                Issue.record("expected a TTL, got \(ttl)")
                return
            }
            #expect(milliseconds > 30_000 && milliseconds <= 60_000)
        }
    }
}
