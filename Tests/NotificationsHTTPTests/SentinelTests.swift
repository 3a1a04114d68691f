import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import NIOPosix
import NotificationsCore
import NotificationsHTTP
import RedisClient
import Resilience
import Testing
import TestSupport

@Suite("Redis Sentinel: a failover is followed without a restart", .serialized)
struct SentinelTests {
    static func role(port: Int) async throws -> String? {
        var configuration = try RedisConfiguration(url: "redis://127.0.0.1:\(port)", operationTimeoutMilliseconds: 1000)
        configuration.connectionCount = 1
        let pool = RedisConnectionPool(configuration: configuration, eventLoopGroup: MultiThreadedEventLoopGroup.singleton, logger: Logger(label: "role"))
        defer { pool.close() }
        return try await pool.send(RedisCommand("ROLE")).array?.first?.string
    }

    static func exists(_ key: String, port: Int) async throws -> Bool {
        var configuration = try RedisConfiguration(url: "redis://127.0.0.1:\(port)", operationTimeoutMilliseconds: 1000)
        configuration.connectionCount = 1
        let pool = RedisConnectionPool(configuration: configuration, eventLoopGroup: MultiThreadedEventLoopGroup.singleton, logger: Logger(label: "exists"))
        defer { pool.close() }
        return try await pool.send(RedisCommand("EXISTS", [key])) == .integer(1)
    }

    /// A sentinel that still names a server that is no longer the master (here: one that
    /// monitors the replica's address under the master's name) is not believed: `ROLE` is
    /// checked and the next sentinel asked. Before the fix the first answer won, and every
    /// write went to a replica (`-READONLY`) until that sentinel changed its mind.
    @Test func aSentinelNamingAReplicaIsSkipped() async throws {
        let master = try await TestServers.startRedis()
        defer { master.stop() }
        let replica = try await TestServers.startRedis(["--replicaof", "127.0.0.1", "\(master.port)"])
        defer { replica.stop() }
        let stale = try await TestServers.startSentinel(masterPort: replica.port, name: "notifications")
        defer { stale.stop() }
        let good = try await TestServers.startSentinel(masterPort: master.port, name: "notifications")
        defer { good.stop() }
        let resolver = SentinelResolver(
            sentinels: [RedisAddress(host: "127.0.0.1", port: stale.port), RedisAddress(host: "127.0.0.1", port: good.port)], masterName: "notifications",
            logger: Logger(label: "sentinel"))
        let eventLoop = MultiThreadedEventLoopGroup.singleton.any()
        let found = try await resolver.master(on: eventLoop, deadline: .now() + .seconds(5))
        #expect(found.port == master.port, "the master, not the replica the first sentinel names (\(replica.port))")
        #expect(try await Self.role(port: found.port) == "master")
    }

    @Test func theMasterIsKilledUnderLoadAndTheNewMasterIsUsed() async throws {
        let master = try await TestServers.startRedis()
        defer { master.stop() }
        let replica = try await TestServers.startRedis(["--replicaof", "127.0.0.1", "\(master.port)"])
        defer { replica.stop() }
        var sentinels: [ChildServer] = []
        for _ in 0..<3 { sentinels.append(try await TestServers.startSentinel(masterPort: master.port, name: "notifications")) }
        defer { for sentinel in sentinels { sentinel.stop() } }
        let addresses = sentinels.map { "127.0.0.1:\($0.port)" }
        // The sentinels must have found the replica before the master goes.
        try await Task.sleep(for: .seconds(2))
        try await withHarness(configure: {
            $0.redisSentinels = addresses
            $0.redisSentinelMaster = "notifications"
            $0.circuitRecoveryTimeoutMilliseconds = 1000
        }) { harness in
            _ = try await harness.client.create(recipient: "ha")
            #expect(try await Self.exists("feed:{ha}:v", port: master.port), "writes go to the master Sentinel names")
            let stream = try await StreamTests.open(harness, "ha-stream")
            defer { stream.close() }
            _ = try await stream.next()
            let killed = ContinuousClock.now
            master.kill()
            var statuses: [Int] = []
            var switchedAfter: Duration?
            var openedAfter: Duration?
            var promotedAfter: Duration?
            while ContinuousClock.now - killed < .seconds(40) {
                if openedAfter == nil, harness.environment.gateway.state != .closed { openedAfter = ContinuousClock.now - killed }
                statuses.append(Int(try await harness.client.post("/v1/notifications", json: #"{"recipientId":"ha","type":"t"}"#).status.code))
                statuses.append(Int(try await harness.client.get("/v1/users/ha/notifications").status.code))
                // Sentinel kills the clients of an instance it reconfigures: a helper's connection
                // closed under it is "not yet", not a failure of the service.
                let promoted = (try? await Self.role(port: replica.port)) == "master"
                if promoted, promotedAfter == nil { promotedAfter = ContinuousClock.now - killed }
                if promoted, harness.environment.gateway.state == .closed {
                    let user = "after-\(statuses.count)"
                    _ = try await harness.client.create(recipient: user)
                    if (try? await Self.exists("feed:{\(user)}:v", port: replica.port)) == true {
                        switchedAfter = ContinuousClock.now - killed
                        break
                    }
                }
                try await Task.sleep(for: .milliseconds(200))
            }
            print("sentinel failover after the kill: breaker left closed \(openedAfter.map { "\($0)" } ?? "never"), replica promoted \(promotedAfter.map { "\($0)" } ?? "never"), new master used with the breaker closed \(switchedAfter.map { "\($0)" } ?? "never"); \(statuses.count) requests meanwhile")
            #expect(switchedAfter != nil, "writes reach the new master without a restart")
            #expect(statuses.allSatisfy { $0 == 200 || $0 == 201 }, "no request failed during the switch: \(Set(statuses))")
            let id = try await harness.client.create(recipient: "ha-stream")["id"] as? String
            #expect(try await StreamTests.nextNotification(stream, timeout: .seconds(10))?.id == id, "streams keep delivering")
        }
    }
}
