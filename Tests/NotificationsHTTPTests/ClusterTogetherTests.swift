import Foundation
@testable import NotificationsCore
import NotificationsHTTP
import RedisClient
import Resilience
import Testing
import TestSupport

/// `RedisGateway.evaluateTogether`: two script calls on two masters sent at once and awaited
/// as one (an API key's rate-limited cached read), each with its own master's rules.
extension ClusterTests {
    static let increment = RedisScript("return redis.call('INCR', KEYS[1])")

    /// Each call is applied exactly once whatever answers it: a reply, `NOSCRIPT` or `MOVED`
    /// (nothing applied: it goes again the usual way), a master frozen past the deadline (that
    /// call alone falls back, and is not sent again: the frozen master applies it once when it
    /// resumes), an open breaker (that call alone is not sent).
    @Test func twoScriptCallsOnTwoMastersGoTogetherAndEachFallsBackAlone() async throws {
        try await withHarness(cluster: true, configure: Self.configure) { harness in
            let gateway = harness.environment.gateway
            let cluster = try #require(harness.environment.redisCluster)
            let nodes = try #require(harness.cluster)
            let map = try #require(cluster.map)
            // Two keys on two masters, and the third master.
            let a = "together-a"
            let masterA = try #require(map.master(forSlot: HashSlot.of(a)))
            let b = try #require((0..<1000).map { "together-b\($0)" }.first { map.master(forSlot: HashSlot.of($0)) != masterA })
            let masterB = try #require(map.master(forSlot: HashSlot.of(b)))
            let third = try #require(map.masters.first { $0 != masterA && $0 != masterB })
            let together = { () async -> [Int64?] in
                let (x, y) = await gateway.evaluateTogether(
                    ScriptCall(.rateLimit, key: a, script: Self.increment, keys: [a], arguments: []),
                    ScriptCall(.feedCache, key: b, script: Self.increment, keys: [b], arguments: []))
                return [x?.integer, y?.integer]
            }
            let value = { (key: String) async throws -> String? in
                try await cluster.route(slot: HashSlot.of(key))?.send(.get(key)).string
            }

            // The first call loads the script the usual way; then both go at once.
            #expect(await together() == [1, 1])
            #expect(await together() == [2, 2])
            // NOSCRIPT on a's master: nothing ran; a goes again the usual way (which loads it), once.
            try TestCluster.cli(masterA.port, ["SCRIPT", "FLUSH"])
            #expect(await together() == [3, 3])

            // a's slot moves to the third master behind the map's back: MOVED, nothing ran there; followed once.
            let slot = HashSlot.of(a)
            let sourceID = try TestCluster.cli(masterA.port, ["CLUSTER", "MYID"]).trimmingCharacters(in: .whitespacesAndNewlines)
            let targetID = try TestCluster.cli(third.port, ["CLUSTER", "MYID"]).trimmingCharacters(in: .whitespacesAndNewlines)
            try TestCluster.cli(third.port, ["CLUSTER", "SETSLOT", "\(slot)", "IMPORTING", sourceID])
            try TestCluster.cli(masterA.port, ["CLUSTER", "SETSLOT", "\(slot)", "MIGRATING", targetID])
            try TestCluster.cli(masterA.port, ["MIGRATE", "127.0.0.1", "\(third.port)", "", "0", "5000", "KEYS", a])
            for master in try nodes.masters() {
                try TestCluster.cli(master.port, ["CLUSTER", "SETSLOT", "\(slot)", "NODE", targetID])
            }
            let moved = cluster.redirections.moved
            #expect(cluster.master(forSlot: slot) == masterA, "the map still names the old master")
            #expect(await together() == [4, 4])
            #expect(cluster.redirections.moved > moved, "MOVED was followed")
            #expect(cluster.master(forSlot: slot) == third)
            #expect(try await Self.fallbacks(harness) == 0, "nothing fell back so far")

            // b's master frozen past the deadline: b falls back within the deadline, a is answered.
            let frozen = try #require(nodes.node(port: masterB.port))
            frozen.pause()
            let started = ContinuousClock.now
            let answers = await together()
            let waited = ContinuousClock.now - started
            frozen.resume()
            #expect(answers == [5, nil])
            #expect(waited < .milliseconds(1900), "one deadline (1 s), not two: \(waited)")
            #expect(try await harness.metric("redis_operations_fallback_total", #"operation="feed_cache""#) == 1)
            #expect(gateway.breakers.breaker(for: masterB.description).consecutiveFailures >= 1)
            // b's INCR was sent once: the master applies it once it resumes, and it is not sent again.
            let applied = try await retrying(for: .seconds(5), every: .milliseconds(50)) { try await value(b) } until: { $0 == "5" }
            #expect(applied == "5")
            try await Task.sleep(for: .milliseconds(300))
            #expect(try await value(b) == "5", "applied once")

            // b's breaker open: b is not sent (and counted), a still is.
            gateway.breakers.breaker(for: masterB.description).forceOpen()
            #expect(await together() == [6, nil])
            #expect(try await value(b) == "5", "not sent")
            #expect(try await harness.metric("redis_operations_fallback_total", #"operation="feed_cache""#) == 2)
            #expect(try await harness.metric("redis_operations_fallback_total", #"operation="rate_limit""#) ?? 0 == 0)
            gateway.breakers.breaker(for: masterB.description).reset()
            #expect(await together() == [7, 6])
        }
    }
}
