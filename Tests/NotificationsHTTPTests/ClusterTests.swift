import Foundation
import HTTPTypes
import HummingbirdTesting
import Logging
import NIOPosix
@testable import NotificationsCore
import NotificationsHTTP
import RedisClient
import Resilience
import Synchronization
import Testing
import TestSupport

/// The service on a real local Redis Cluster (three masters, three replicas, made by the test).
@Suite("Redis Cluster", .serialized)
struct ClusterTests {
    static let tokenKey = UserTokenKey(kid: "cluster", secret: "cluster-user-token-secret-32-bytes!!")
    /// Creates go through an unlimited key: their rate limit needs no Redis, so each user's
    /// reads (user tokens, a bucket per user, on the user's master) tell which slots fell back.
    static let writer: HTTPFields = [.authorization: "Bearer other-secret", .contentType: "application/json"]

    static func configure(_ settings: inout Settings) {
        settings.userTokenKeys = [tokenKey]
        settings.rateLimitPolicies = [
            RateLimitPolicy(name: "*", limit: 10_000, windowMilliseconds: 1000), RateLimitPolicy(name: "other", limit: nil, windowMilliseconds: 0),
            RateLimitPolicy(name: "limited", limit: 6, windowMilliseconds: 60_000),
        ]
        settings.redisOperationTimeoutMilliseconds = 1000
    }

    /// Users whose slots each master serves: `count` per master, by master.
    static func usersByMaster(_ harness: Harness, count: Int) throws -> [RedisAddress: [String]] {
        let map = try #require(harness.environment.redisCluster?.map)
        var users: [RedisAddress: [String]] = [:]
        var index = 0
        while users.count < map.masters.count || users.values.contains(where: { $0.count < count }) {
            let user = "user-\(index)"
            index += 1
            let master = try #require(map.master(forSlot: HashSlot.of(user)))
            if users[master, default: []].count < count { users[master, default: []].append(user) }
        }
        return users
    }

    static func mint(_ harness: Harness, _ user: String) async throws -> HTTPFields {
        let response = try await harness.client.post("/v1/users/\(user)/tokens", json: "{}")
        #expect(response.status == .created, "\(response.text)")
        let token = try #require(try response.jsonObject()["token"] as? String)
        return [.authorization: "Bearer \(token)"]
    }

    static func fallbacks(_ harness: Harness) async throws -> Double {
        var total = 0.0
        for operation in ServiceMetrics.Operation.allCases {
            total += try await harness.metric("redis_operations_fallback_total", "operation=\"\(operation.rawValue)\"") ?? 0
        }
        return total
    }

    /// Every feature's keys on the cluster, across two instances: nothing falls back (a script
    /// whose keys spanned slots, or a key sent to the wrong node, would), and each behaves as on one Redis.
    @Test func everyFeatureWorksOnTheClusterAcrossInstances() async throws {
        try await withHarness(cluster: true, configure: Self.configure) { harness in
            let users = try Self.usersByMaster(harness, count: 2).values.flatMap { $0 }.sorted()
            try await harness.withOtherInstance { other in
                // Rate limit: one bucket for both instances.
                var allowed = 0
                for index in 0..<10 {
                    let limiter = index.isMultiple(of: 2) ? harness.environment.services.limiter : other.services.limiter
                    if await limiter.check(keyName: "limited", group: .read).outcome == .allowed { allowed += 1 }
                }
                #expect(allowed == 6)

                // Cache read-your-writes across instances: a write on the other instance is seen here at once.
                let user = users[0]
                _ = try await harness.client.create(recipient: user)
                let miss = try await harness.client.get("/v1/users/\(user)/notifications")
                let hit = try await harness.client.get("/v1/users/\(user)/notifications")
                #expect(miss.headers[.init("X-Cache")!] == "miss" && hit.headers[.init("X-Cache")!] == "hit")
                _ = try await other.services.feed.create(NewNotification(recipientId: user, type: "from.other"))
                let after = try await harness.client.get("/v1/users/\(user)/notifications")
                #expect(after.text.contains("from.other"), "the other instance's write is not served stale")
            }

            // Idempotent creates: the same key twice is one notification.
            var keyed = Self.writer
            keyed[.init("Idempotency-Key")!] = "cluster-create"
            let first = try await harness.client.post("/v1/notifications", json: #"{"recipientId":"\#(users[1])","type":"once"}"#, headers: keyed)
            let again = try await harness.client.post("/v1/notifications", json: #"{"recipientId":"\#(users[1])","type":"once"}"#, headers: keyed)
            #expect(first.status == .created && again.status == .created)
            #expect(try first.jsonObject()["id"] as? String == again.jsonObject()["id"] as? String)

            // An event to users on every master (batched invalidations and publishes, one script per slot), twice: once.
            let stream = try await StreamTests.open(harness, users[2])
            defer { stream.close() }
            let event = #"{"id":"cluster-event","type":"deploy","actorId":"ops","audience":{"userIds":[\#(users.map { "\"\($0)\"" }.joined(separator: ","))]}}"#
            #expect(try await harness.client.post("/v1/events", json: event, headers: Self.writer).status.code < 300)
            #expect(try await harness.client.post("/v1/events", json: event, headers: Self.writer).status.code < 300)
            for user in users {
                let feed = try await retrying(for: .seconds(10)) { try await harness.client.get("/v1/users/\(user)/notifications").text } until: {
                    $0.contains("deploy")
                }
                #expect(feed.components(separatedBy: "\"deploy\"").count == 2, "\(user) has the event's notification once")
            }
            let pushed = try await StreamTests.nextNotification(stream)
            #expect(pushed?.data.contains("deploy") == true, "the stream of a user got the event's notification")

            // A lock (read-all takes the user's lock), user tokens (per-user bucket and the cache read-ahead in one script), revocation.
            #expect(try await harness.client.execute(uri: "/v1/users/\(users[3])/notifications/read-all", method: .post, headers: Self.writer).status == .ok)
            let token = try await Self.mint(harness, users[3])
            let read = try await harness.client.get("/v1/users/\(users[3])/notifications", headers: token)
            #expect(read.status == .ok && read.headers[.init("X-RateLimit-Status")!] == "enforced")
            #expect(try await harness.client.post("/v1/users/\(users[3])/tokens/revoke", json: "{}").status.code < 300)
            #expect(try await harness.client.get("/v1/users/\(users[3])/notifications", headers: token).status == .unauthorized)

            #expect(try await Self.fallbacks(harness) == 0, "no Redis call of any feature fell back")
            #expect(try await harness.metric("redis_circuit_breaker_failures_total", "service=\"redis\"") == 0)
            let breakers = try await harness.client.get("/admin/circuit-breakers", headers: [:]).jsonObject()
            let redis = try #require(breakers["redis"] as? [String: Any])
            let nodes = try #require(redis["nodes"] as? [String: [String: Any]])
            #expect(redis["state"] as? String == "closed")
            #expect(nodes.count == 3 && nodes.values.allSatisfy { $0["state"] as? String == "closed" })

            // The drill and the reset act on every master.
            let opened = try await harness.client.execute(uri: "/admin/circuit-breaker/redis/open", method: .post, headers: [:]).jsonObject()
            #expect(opened["state"] as? String == "open")
            let drilled = try await harness.client.get("/admin/circuit-breakers", headers: [:]).jsonObject()["redis"] as? [String: Any]
            let drilledNodes = try #require(drilled?["nodes"] as? [String: [String: Any]])
            #expect(drilledNodes.values.allSatisfy { $0["state"] as? String == "open" && $0["forced"] as? Bool == true })
            let during = try await harness.client.get("/v1/users/\(users[4])/notifications", headers: try await Self.mint(harness, users[4]))
            #expect(during.status == .ok && during.headers[.init("X-RateLimit-Status")!] == "bypassed-fail-open")
            let reset = try await harness.client.execute(uri: "/admin/circuit-breaker/redis/reset", method: .post, headers: [:]).jsonObject()
            #expect(reset["state"] as? String == "closed")
            for (node, value) in Dictionary(uniqueKeysWithValues: harness.environment.gateway.breakers.all.map { ($0.node, $0.breaker.state) }) {
                #expect(value == .closed, "\(node) closed after the reset")
            }
        }
    }

    /// The near cache on the cluster: tracking on every master keeps it exact across instances,
    /// and a master that dies drops only its own users' entries.
    @Test func theNearCacheTracksEveryMasterAndAFailedOneFlushesOnlyItsUsers() async throws {
        try await withHarness(cluster: true, configure: {
            Self.configure(&$0)
            $0.feedNearCache = true
        }) { harness in
            let near = try #require(harness.environment.services.cache.near)
            let tracked = try await retrying(for: .seconds(10), every: .milliseconds(20)) { near.activeNodes.count } until: { $0 == 3 }
            #expect(tracked == 3, "tracking runs on every master")
            let byMaster = try Self.usersByMaster(harness, count: 1)
            let masters = byMaster.keys.sorted { $0.port < $1.port }
            let victim = masters[0]
            let (doomed, kept) = (byMaster[masters[0]]![0], byMaster[masters[1]]![0])
            let unlimited: HTTPFields = [.authorization: "Bearer other-secret"]
            func count(_ user: String) async throws -> (Int?, String?) {
                let response = try await harness.client.get("/v1/users/\(user)/notifications/unread-count", headers: unlimited)
                return (try response.jsonObject()["unreadCount"] as? Int, response.headers[.init("X-Cache-Tier")!])
            }
            for user in [doomed, kept] {
                _ = try await harness.client.create(recipient: user)
                let local = try await retrying(for: .seconds(2), every: .milliseconds(10)) { try await count(user) } until: { $0.1 == "local" }
                #expect(local.0 == 1 && local.1 == "local")
            }
            // A write on another instance reaches this one's near cache through its master's invalidations.
            try await harness.withOtherInstance { other in
                _ = try await other.services.feed.create(NewNotification(recipientId: kept, type: "elsewhere"))
            }
            let fresh = try await retrying(for: .seconds(2), every: .milliseconds(10)) { try await count(kept) } until: { $0.0 == 2 }
            #expect(fresh.0 == 2, "not served stale after another instance's write")
            _ = try await retrying(for: .seconds(2), every: .milliseconds(10)) { try await count(kept) } until: { $0.1 == "local" }

            try #require(harness.cluster?.node(port: victim.port)).kill()
            let dropped = try await retrying(for: .seconds(5), every: .milliseconds(10)) { near.activeNodes } until: { !$0.contains(victim.description) }
            #expect(!dropped.contains(victim.description))
            let keptRead = try await count(kept)
            #expect(keptRead.0 == 2 && keptRead.1 == "local", "the other masters' users are still served locally")
            let doomedRead = try await count(doomed)
            #expect(doomedRead.0 == 1 && doomedRead.1 != "local", "the dead master's users are not served from entries it can no longer invalidate")
        }
    }

    /// A user's slot migrated to another master while the user's writes and reads run and the
    /// user's stream is open: `ASK` during the migration, `MOVED` (or a map read) after it, no
    /// request fails or falls back, every read after a write sees it (nothing stale), and the
    /// stream's channel moves to the new master.
    @Test func aSlotMigratedUnderRequestsIsFollowedWithNothingStale() async throws {
        try await withHarness(cluster: true, configure: Self.configure) { harness in
            let cluster = try #require(harness.environment.redisCluster)
            let user = "migrating-user"
            let slot = HashSlot.of(user)
            let source = try #require(cluster.master(forSlot: slot))
            let target = try #require(cluster.map?.masters.first { $0 != source })
            let token = try await Self.mint(harness, user)
            let stream = try await StreamTests.open(harness, user, key: "other-secret")
            defer { stream.close() }
            let before = cluster.redirections
            let failures = Samples()
            let load = Task {
                var created = 0
                while !Task.isCancelled {
                    guard let create = try? await harness.client.post("/v1/notifications", json: #"{"recipientId":"\#(user)","type":"t"}"#, headers: Self.writer) else { break }
                    if create.status == .created { created += 1 }
                    for path in ["/v1/users/\(user)/notifications/unread-count", "/v1/users/\(user)/notifications?limit=100"] {
                        guard let read = try? await harness.client.get(path, headers: token) else { break }
                        let count = path.contains("unread") ? try read.jsonObject()["unreadCount"] as? Int : (try read.jsonObject()["items"] as? [Any])?.count
                        if create.status != .created || read.status != .ok || read.headers[.init("X-RateLimit-Status")!] != "enforced" || count != min(created, 100) {
                            failures.add(Sample(at: .now, master: source, status: Int(read.status.code), rateLimit: "\(path) \(count ?? -1) of \(created)"))
                        }
                    }
                }
                return created
            }
            try await Task.sleep(for: .milliseconds(300))
            let sourceID = try TestCluster.cli(source.port, ["CLUSTER", "MYID"]).trimmingCharacters(in: .whitespacesAndNewlines)
            let targetID = try TestCluster.cli(target.port, ["CLUSTER", "MYID"]).trimmingCharacters(in: .whitespacesAndNewlines)
            try TestCluster.cli(target.port, ["CLUSTER", "SETSLOT", "\(slot)", "IMPORTING", sourceID])
            try TestCluster.cli(source.port, ["CLUSTER", "SETSLOT", "\(slot)", "MIGRATING", targetID])
            // Ten keys at a time (as `redis-cli --cluster reshard` moves them), with requests between:
            // some of the user's keys on each side for a while.
            while true {
                let keys = try TestCluster.cli(source.port, ["CLUSTER", "GETKEYSINSLOT", "\(slot)", "10"]).split(separator: "\n").map(String.init)
                if keys.isEmpty { break }
                try TestCluster.cli(source.port, ["MIGRATE", "127.0.0.1", "\(target.port)", "", "0", "5000", "KEYS"] + keys)
                try await Task.sleep(for: .milliseconds(30))
            }
            // Every key is on the target, the slot still migrating: requests meet ASK (not the
            // TRYAGAIN of a script whose keys are split, as between batches). Wait here until one
            // has, however slowly the load runs (a busy machine ran none in the 30 ms pauses).
            _ = try await retrying(for: .seconds(5), every: .milliseconds(10)) { cluster.redirections.asked } until: { $0 > before.asked }
            let duringMigration = cluster.redirections
            for master in try #require(harness.cluster).masters() {
                try TestCluster.cli(master.port, ["CLUSTER", "SETSLOT", "\(slot)", "NODE", targetID])
            }
            try await Task.sleep(for: .milliseconds(800))
            load.cancel()
            let created = (try? await load.value) ?? -1
            let after = cluster.redirections
            print("slot migration under requests: \(created) creates, \(duringMigration.asked - before.asked) ASK, \(after.moved - before.moved) MOVED followed")
            #expect(failures.all.isEmpty, "\(failures.all.prefix(5).map { "\($0.status) \($0.rateLimit ?? "")" })")
            #expect(duringMigration.asked > before.asked, "ASK was followed during the migration")
            // After it, a call meets MOVED, unless the map was read first: the source's
            // `sunsubscribe` of the user's stream channel asks for a read at once
            // (ClusterClientTests follows MOVED on its own).
            #expect(after.moved > before.moved || cluster.map?.master(forSlot: slot) == target, "MOVED was followed, or the map read")
            #expect(cluster.master(forSlot: slot) == target)
            #expect(try await Self.fallbacks(harness) == 0, "nothing fell back")
            // The user's stream channel moved with the slot (the source's `sunsubscribe`, or the next
            // map read), and a create after the migration is pushed.
            let subscriber = try #require(harness.environment.subscriber as? ClusterSubscriber)
            let moved = try await retrying(for: .seconds(12), every: .milliseconds(50)) { subscriber.master(of: "stream:{\(user)}") } until: {
                $0 == target
            }
            #expect(moved == target, "the stream channel is subscribed on the slot's new master")
            #expect(try await harness.client.post("/v1/notifications", json: #"{"recipientId":"\#(user)","type":"after-migration"}"#, headers: Self.writer).status == .created)
            #expect(try await StreamTests.receives(stream, notificationContaining: "after-migration", timeout: .seconds(12)), "the stream of the migrated slot's user is pushed to after the migration")
        }
    }

    /// One read per user and one create for one of them, in turn, until `stop`: what each got.
    struct Sample: Sendable {
        var at: ContinuousClock.Instant
        var master: RedisAddress
        var status: Int
        var rateLimit: String?
        var write = false
    }

    /// A master SIGKILLed under a steady load of reads (user tokens) and writes for users of every master.
    @Test(arguments: [true, false]) func aKilledMasterFallsBackForItsOwnSlotsOnly(failOpen: Bool) async throws {
        try await withHarness(cluster: true, configure: {
            Self.configure(&$0)
            $0.redisFailOpen = failOpen
        }) { harness in
            let cluster = try #require(harness.environment.redisCluster)
            let byMaster = try Self.usersByMaster(harness, count: 2)
            var tokens: [String: HTTPFields] = [:]
            for user in byMaster.values.joined() { tokens[user] = try await Self.mint(harness, user) }
            let victim = try #require(byMaster.keys.sorted { $0.port < $1.port }.first)
            let replica = try #require(try harness.cluster?.replica(of: victim.port))
            let victimUser = try #require(byMaster[victim]?.first)
            let stream = try await StreamTests.open(harness, victimUser)
            defer { stream.close() }
            _ = try await StreamTests.nextNotification(stream, timeout: .milliseconds(200))

            let samples = Samples()
            let load = Task {
                var round = 0
                while !Task.isCancelled {
                    round += 1
                    for (master, users) in byMaster.sorted(by: { $0.key.port < $1.key.port }) {
                        for user in users {
                            let read = try await harness.client.get("/v1/users/\(user)/notifications?limit=5", headers: tokens[user]!)
                            samples.add(Sample(at: .now, master: master, status: Int(read.status.code), rateLimit: read.headers[.init("X-RateLimit-Status")!]))
                        }
                        let created = try await harness.client.post(
                            "/v1/notifications", json: #"{"recipientId":"\#(users[0])","type":"load-\#(round)"}"#, headers: Self.writer)
                        samples.add(Sample(at: .now, master: master, status: Int(created.status.code), rateLimit: nil, write: true))
                    }
                }
            }
            try await Task.sleep(for: .seconds(1))
            let killed = ContinuousClock.now
            try #require(harness.cluster?.node(port: victim.port)).kill()
            let victimNode = victim.description
            let opened = try await retrying(for: .seconds(10), every: .milliseconds(20)) {
                harness.environment.gateway.breakers.all.first { $0.node == victimNode }?.breaker.state
            } until: { $0 == .open }
            let openedAfter = ContinuousClock.now - killed
            #expect(opened == .open, "the dead master's breaker opens")
            let promoted = try await retrying(for: .seconds(30), every: .milliseconds(20)) { cluster.master(forSlot: HashSlot.of(victimUser)) } until: {
                $0?.port == replica
            }
            let promotedAfter = ContinuousClock.now - killed
            #expect(promoted?.port == replica, "the replica's promotion is seen without a restart")
            // The dead master's users are enforced again on the new master.
            let enforcedAgain = try await retrying(for: .seconds(10), every: .milliseconds(50)) {
                samples.all.last { $0.master == victim && $0.rateLimit != nil }
            } until: { ($0?.at ?? killed) > killed + promotedAfter && $0?.rateLimit == "enforced" && $0?.status == 200 }
            let enforcedAfter = (enforcedAgain?.at ?? .now) - killed
            try await Task.sleep(for: .milliseconds(500))
            load.cancel()
            _ = try? await load.value

            let all = samples.all
            let others = all.filter { $0.master != victim }
            let mine = all.filter { $0.master == victim && $0.at > killed }
            let reads = all.filter { $0.at > killed && !$0.write }
            let enforcedShare = Double(reads.filter { $0.rateLimit == "enforced" }.count) / Double(max(1, reads.count))
            print("cluster failover (failOpen \(failOpen)): kill → breaker open \(openedAfter), promotion seen \(promotedAfter), "
                + "the dead master's users enforced again \(enforcedAfter); \(reads.count) rate-limited reads after the kill, "
                + "\(Int(enforcedShare * 100)) % enforced; the dead master's users: \(mine.count) requests, "
                + "\(mine.filter { $0.rateLimit == "bypassed-fail-open" }.count) bypassed, \(mine.filter { $0.status == 503 }.count) answered 503")
            #expect(enforcedAgain?.rateLimit == "enforced")
            #expect(others.allSatisfy { $0.status < 300 && ($0.rateLimit ?? "enforced") == "enforced" }, "the other masters' users stay enforced throughout")
            if failOpen {
                #expect(all.allSatisfy { $0.status < 300 }, "no request fails: \(all.filter { $0.status >= 300 }.map(\.status))")
                #expect(mine.contains { $0.rateLimit == "bypassed-fail-open" }, "the dead master's users were served fail-open meanwhile")
            } else {
                #expect(mine.allSatisfy { $0.status < 300 || $0.status == 503 })
                #expect(mine.contains { $0.status == 503 }, "fail-closed: the dead master's users got 503 meanwhile")
                #expect(all.filter(\.write).allSatisfy { $0.status < 300 }, "creates need no lock or limiter of that master")
            }
            // Streams of the dead master's users deliver again.
            let last = try await harness.client.post("/v1/notifications", json: #"{"recipientId":"\#(victimUser)","type":"after-failover"}"#, headers: Self.writer)
            #expect(last.status == .created)
            #expect(try await StreamTests.receives(stream, notificationContaining: "after-failover", timeout: .seconds(15)), "the stream of a user of the dead master delivers again")
        }
    }
}

/// Samples taken by the load task, read by the test.
final class Samples: Sendable {
    private let list = Mutex<[ClusterTests.Sample]>([])
    func add(_ sample: ClusterTests.Sample) { list.withLock { $0.append(sample) } }
    var all: [ClusterTests.Sample] { list.withLock { $0 } }
}
