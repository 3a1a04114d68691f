import HTTPTypes
import HummingbirdTesting
import NotificationsCore
import RedisClient
import Testing
import TestSupport

/// Counts the commands Redis received (`MONITOR`), so "one round trip per request" is
/// measured at the server, not inferred from the code.
@Suite("Redis round trips per request")
struct RoundTripTests {
    static let xCache = HTTPField.Name("X-Cache")!
    static let cachedReads = [
        "/v1/users/trip/notifications", "/v1/users/trip/notifications?limit=5&unreadOnly=true", "/v1/users/trip/notifications/unread-count",
        "/v1/users/trip/preferences", "/v1/users/trip/followers",
    ]

    /// The client commands Redis received while `body` ran, by name. Redis's own counters
    /// (`INFO commandstats`) would also count what a script ran inside Redis; `MONITOR` shows
    /// those apart, so this is the number of round trips. The subscriber's keep-alive PINGs
    /// are left out; the `ECHO` that marks the end is too.
    static func commands(_ harness: Harness, during body: () async throws -> Void) async throws -> [String: Int] {
        let monitor = try await RedisMonitor(port: harness.redis.port)
        defer { monitor.stop() }
        try await body()
        let marker = "end-\(UInt64.random(in: 0...UInt64.max))"
        _ = try await harness.withRedisAdmin { admin in try await admin.send(RedisCommand("ECHO", [marker])) }
        var counts = try await monitor.commands(through: marker)
        counts["ping"] = nil
        counts["echo"] = nil
        return counts
    }

    @Test func aRateLimitedCachedReadIsOneRoundTripHitOrMiss() async throws {
        try await withHarness { harness in
            _ = try await harness.client.create(recipient: "trip")
            // Misses: the rate-limit check brings the version, the load is stored under it (one
            // SET). The create may already have cached the preferences (its mute check reads them).
            var missed = 0
            let misses = try await Self.commands(harness) {
                for path in Self.cachedReads {
                    let cache = try await harness.client.get(path).headers[Self.xCache]
                    #expect(cache == "miss" || (cache == "hit" && path.hasSuffix("preferences")), "\(path)")
                    missed += cache == "miss" ? 1 : 0
                }
            }
            #expect(missed >= Self.cachedReads.count - 1)
            #expect(misses == ["evalsha": Self.cachedReads.count, "set": missed], "\(misses)")
            let hits = try await Self.commands(harness) {
                for _ in 0..<3 {
                    for path in Self.cachedReads {
                        let response = try await harness.client.get(path)
                        #expect(response.status == .ok)
                        #expect(response.headers[Self.xCache] == "hit", "\(path)")
                        #expect(response.headers[HTTPField.Name("X-RateLimit-Status")!] == "enforced")
                    }
                }
            }
            #expect(hits == ["evalsha": 3 * Self.cachedReads.count], "\(hits)")
            // A write is still seen by the next read: the read-ahead carries the new version.
            _ = try await harness.client.create(recipient: "trip")
            let after = try await harness.client.get("/v1/users/trip/notifications/unread-count")
            #expect(after.headers[Self.xCache] == "miss")
            #expect(try after.jsonObject()["unreadCount"] as? Int == 2)
        }
    }

    @Test func anUnlimitedKeyAndARejectedRequestAreOneRoundTripToo() async throws {
        try await withHarness(configure: {
            $0.rateLimitPolicies = [
                RateLimitPolicy(name: "*", limit: 1, windowMilliseconds: 60_000), RateLimitPolicy(name: "other", limit: nil, windowMilliseconds: 1000),
            ]
        }) { harness in
            let other: HTTPFields = [.authorization: "Bearer other-secret"]
            _ = try await harness.client.get("/v1/users/trip/notifications", headers: other)
            // Unlimited: no check, the handler's own lookup is the round trip.
            let unlimited = try await Self.commands(harness) {
                let response = try await harness.client.get("/v1/users/trip/notifications", headers: other)
                #expect(response.headers[Self.xCache] == "hit")
            }
            #expect(unlimited == ["evalsha": 1], "\(unlimited)")
            // Limited (1 per minute): the first passes with its lookup, the second is refused
            // by the same script, which then looks nothing up.
            let limited = try await Self.commands(harness) {
                let first = try await harness.client.get("/v1/users/trip/notifications")
                #expect(first.headers[Self.xCache] == "hit")
                let second = try await harness.client.get("/v1/users/trip/notifications")
                #expect(second.status == .tooManyRequests)
            }
            // This is the GCRA script's first use on this Redis: it is loaded once (SCRIPT LOAD).
            #expect(limited.filter { $0.key != "script" } == ["evalsha": 2], "\(limited)")
            #expect((limited["script"] ?? 0) <= 1, "\(limited)")
        }
    }
}
