import Foundation
import Logging
import NIOCore
import NIOPosix
@testable import RedisClient
import Testing
import TestSupport

/// The cluster client against a real local Redis Cluster (three masters, three replicas).
@Suite("RedisCluster against a real local cluster", .serialized)
struct ClusterClientTests {
    static func withCluster(_ body: @Sendable (RedisCluster, TestCluster) async throws -> Void) async throws {
        try await TestServers.fixtures.withPermit {
            let nodes = try await TestServers.startRedisCluster()
            defer { nodes.stop() }
            let seeds = nodes.seeds.split(separator: ",").compactMap { RedisAddress(parsing: $0) }
            let cluster = RedisCluster(
                seeds: Array(seeds.prefix(2)), configuration: RedisConfiguration(operationTimeoutMilliseconds: 2000),
                eventLoopGroup: MultiThreadedEventLoopGroup.singleton, logger: Logger(label: "cluster"))
            defer { cluster.close() }
            #expect(await cluster.refresh())
            try await body(cluster, nodes)
        }
    }

    @Test func hashSlotsAreRedisClusterOnes() {
        // The CRC16 check value of the XMODEM variant, and the examples of the cluster specification.
        #expect(HashSlot.crc16(Array("123456789".utf8)[...]) == 0x31C3)
        #expect(HashSlot.of("foo") == 12182)
        #expect(HashSlot.of("{user1000}.following") == HashSlot.of("{user1000}.followers"))
        #expect(HashSlot.of("foo{}{bar}") == HashSlot.of(bytes: Array("foo{}{bar}".utf8)))
        #expect(HashSlot.tagged(Array("foo{}{bar}".utf8)).elementsEqual("foo{}{bar}".utf8), "an empty first tag hashes the whole key")
        #expect(HashSlot.tagged(Array("foo{{bar}}zap".utf8)).elementsEqual("{bar".utf8))
        #expect(HashSlot.tagged(Array("foo{bar}{zap}".utf8)).elementsEqual("bar".utf8))
    }

    @Test func theMapCoversEverySlotAndEveryKeyGoesToItsMaster() async throws {
        try await Self.withCluster { cluster, nodes in
            let map = try #require(cluster.map)
            #expect(map.masters.count == 3)
            #expect(map.uncoveredSlots == 0)
            #expect(map.nodes.count == 6, "replicas are known too: \(map.nodes)")
            let expected = try nodes.masters()
            for master in expected {
                #expect(map.slots(of: RedisAddress(host: "127.0.0.1", port: master.port)) == master.slots)
            }
            let keys = (0..<300).map { "key-\($0)" } + ["{user-7}:a", "{user-7}:b", "feed:{user-7}:v"]
            for key in keys {
                // The server agrees on the slot, and the map's master holds the key without redirection.
                let serverSlot = try await cluster.pool(for: map.masters[0]).send(RedisCommand("CLUSTER", ["KEYSLOT", key]))
                #expect(serverSlot == .integer(Int64(HashSlot.of(key))), "\(key)")
                _ = try await cluster.route(slot: HashSlot.of(key))!.send(.set(key, Array(key.utf8)))
                let owner = try #require(map.master(forSlot: HashSlot.of(key)))
                #expect(try await cluster.pool(for: owner).send(.get(key)) == .bulkString(Array(key.utf8)))
            }
        }
    }

    @Test func aScriptWhoseKeysSpanSlotsIsRefusedBeforeItIsSent() async throws {
        try await Self.withCluster { cluster, _ in
            let script = RedisScript("return #KEYS")
            let slot = HashSlot.of("{a}x")
            let sameSlot = try await cluster.route(slot: slot)!.evaluate(script, keys: ["{a}x", "{a}y"], arguments: [])
            #expect(sameSlot == .integer(2))
            await #expect(throws: RedisError.self) { try await cluster.route(slot: slot)!.evaluate(script, keys: ["{a}x", "{b}y"], arguments: []) }
        }
    }

    /// A slot moved while calls run: `ASK` for keys that left during the migration, `MOVED` once it is done.
    @Test func aMigratingSlotIsFollowedWithAskThenMoved() async throws {
        try await Self.withCluster { cluster, nodes in
            let slot = HashSlot.of("{migrating}")
            let map = try #require(cluster.map)
            let source = try #require(map.master(forSlot: slot))
            let target = try #require(map.masters.first { $0 != source })
            let sourceID = try TestCluster.cli(source.port, ["CLUSTER", "MYID"]).trimmingCharacters(in: .whitespacesAndNewlines)
            let targetID = try TestCluster.cli(target.port, ["CLUSTER", "MYID"]).trimmingCharacters(in: .whitespacesAndNewlines)
            let route = try #require(cluster.route(slot: slot))
            let keys = (0..<20).map { "{migrating}:\($0)" }
            for key in keys { _ = try await route.send(.set(key, Array("before-\(key)".utf8))) }

            try TestCluster.cli(target.port, ["CLUSTER", "SETSLOT", "\(slot)", "IMPORTING", sourceID])
            try TestCluster.cli(source.port, ["CLUSTER", "SETSLOT", "\(slot)", "MIGRATING", targetID])
            try TestCluster.cli(source.port, ["MIGRATE", "127.0.0.1", "\(target.port)", "", "0", "5000", "KEYS"] + keys.prefix(10))
            // Half moved: the moved half answers through ASK (the source no longer has them), the rest from the source.
            for key in keys {
                #expect(try await route.send(.get(key)) == .bulkString(Array("before-\(key)".utf8)), "\(key) during the migration")
            }
            // A new key of the slot is created on the target (the source answers ASK for a key it does not have).
            _ = try await route.send(.set("{migrating}:new", Array("new".utf8)))
            #expect(try await route.send(.get("{migrating}:new")) == .bulkString(Array("new".utf8)))
            let script = RedisScript("return redis.call('GET', KEYS[1])")
            #expect(try await route.evaluate(script, keys: ["{migrating}:3"], arguments: []) == .bulkString(Array("before-{migrating}:3".utf8)))

            try TestCluster.cli(source.port, ["MIGRATE", "127.0.0.1", "\(target.port)", "", "0", "5000", "KEYS"] + keys.dropFirst(10))
            for node in try nodes.masters() {
                try TestCluster.cli(node.port, ["CLUSTER", "SETSLOT", "\(slot)", "NODE", targetID])
            }
            // The map still names the source: its MOVED moves the slot at once, and the call goes on there.
            #expect(cluster.master(forSlot: slot) == source)
            for key in keys {
                #expect(try await route.send(.get(key)) == .bulkString(Array("before-\(key)".utf8)), "\(key) after the migration")
            }
            #expect(cluster.master(forSlot: slot) == target)
            #expect(try await route.send(.get("{migrating}:new")) == .bulkString(Array("new".utf8)))
        }
    }

    /// A master killed: its calls fail fast, the map is read every second until its replica
    /// is promoted, and the slots then go to the new master with no restart.
    @Test func aMastersFailoverIsFollowed() async throws {
        try await Self.withCluster { cluster, nodes in
            let runner = Task { try await cluster.run() }
            defer { runner.cancel() }
            let slot = HashSlot.of("{failover}")
            let victim = try #require(cluster.master(forSlot: slot))
            let replica = try #require(try nodes.replica(of: victim.port))
            let route = try #require(cluster.route(slot: slot))
            _ = try await route.send(.set("{failover}", Array("kept".utf8)))
            // The replica has the key before its master dies.
            #expect(try await route.send(RedisCommand("WAIT", ["1", "5000"])) == .integer(1))
            try #require(nodes.node(port: victim.port)).kill()
            await #expect(throws: RedisError.self) { try await route.send(.get("{failover}")) }
            let promoted = try await retrying(for: .seconds(45), every: .milliseconds(100)) {
                cluster.master(forSlot: slot)
            } until: { $0?.port == replica }
            #expect(promoted?.port == replica)
            // A route is made per call (it starts at the master of its time): a new one goes to the new master.
            #expect(try await cluster.route(slot: slot)?.send(.get("{failover}")) == .bulkString(Array("kept".utf8)))
        }
    }
}
