import CoreMetrics
import Logging
import NIOPosix
@testable import NotificationsCore
import RedisClient
import Resilience
import Testing

/// Every key builder and every script's keys, against Redis Cluster's slot rule: all of one
/// user's keys share the user's hash tag (so every script of a user touches one slot), and keys
/// not tied to a user are tagged per key (so they spread over the cluster). The cluster itself
/// (RedisCluster.Route) refuses a call whose keys leave its slot, and ClusterTests runs every
/// feature on a real cluster with no fallback; this walks the builders one by one.
@Suite("Redis Cluster: hash tags of every key")
struct ClusterKeyTests {
    static let users = ["alice", "user-1", "a.b@c:d_e-f", "0", String(repeating: "x", count: 128)]

    static func caches() -> (feed: FeedCache, prefs: FeedCache) {
        let pool = RedisConnectionPool(configuration: RedisConfiguration(), eventLoopGroup: MultiThreadedEventLoopGroup.singleton, logger: Logger(label: "keys"))
        let gateway = RedisGateway(
            pool: pool, configuration: CircuitBreakerConfiguration(), failOpen: true, metrics: ServiceMetrics(factory: NOOPMetricsHandler.instance),
            logger: Logger(label: "keys"))
        return (
            FeedCache(gateway: gateway, ttlSeconds: 30, logger: Logger(label: "keys")),
            FeedCache(gateway: gateway, ttlSeconds: 30, logger: Logger(label: "keys"), namespace: "prefs")
        )
    }

    @Test(arguments: users) func everyKeyOfAUserIsInTheUsersSlot(user: String) {
        let (feed, prefs) = Self.caches()
        let slot = HashSlot.of(user)
        let lock = LockManager.key("bulk:{\(user)}")
        let keys = [
            // Feed and preference caches: versions, and the entries the scripts build from them
            // (`lookup`: prefix .. version .. ':' .. variant; `lookupMany`: the version key with `v` replaced).
            feed.versionKey(user), feed.entryPrefix(user) + "k2j3:page:20", String(feed.versionKey(user).dropLast()) + "e:k2j3:unread",
            prefs.versionKey(user), prefs.entryPrefix(user) + "k2j3:prefs",
            // The read-all lock and its fencing counter (one script sets both).
            lock, lock + ":fence",
            // A user token's rate-limit buckets (the script that also reads the feed cache ahead).
            RateLimiter.bucket(scope: "read:user", subject: RateLimiter.subject(user: user)),
            RateLimiter.bucket(scope: "all:user", subject: RateLimiter.subject(user: user)),
            TokenRevocations.redisKey(user),
            StreamMessage.channel(user),
        ]
        for key in keys { #expect(HashSlot.of(key) == slot, "\(key)") }
    }

    @Test func keysNotTiedToAUserAreTaggedPerKey() {
        // An API key's bucket: one slot per key and policy, so API keys spread over the masters.
        let buckets = (0..<200).map { RateLimiter.bucket(scope: "all:*", subject: "key-\($0)") }
        #expect(Set(buckets.map(HashSlot.of)).count > 150)
        #expect(buckets.allSatisfy { $0.hasPrefix("ratelimit:{") && $0.hasSuffix("}") })
        // A lock not named after a user: the lock and its fence share the whole name as their tag.
        for name in ["retention", "fanout:e-1", "bulk:plain"] {
            #expect(HashSlot.of(LockManager.key(name)) == HashSlot.of(LockManager.key(name) + ":fence"))
        }
        #expect(Set((0..<200).map { HashSlot.of(LockManager.key("job-\($0)")) }).count > 150)
        // Idempotency copies: one key each, tagged whole.
        let copies = (0..<200).map { IdempotencyStore.redisKey("test:key-\($0)") }
        #expect(Set(copies.map(HashSlot.of)).count > 150)
    }

    @Test func aGatewayGroupsManyUsersKeysBySlot() {
        let (feed, _) = Self.caches()
        // A single Redis takes any keys in one script: one group.
        let keys = Self.users.map(feed.versionKey)
        #expect(feed.gateway.slotGroups(keys) == [Array(keys.indices)])
        // A cluster: one group per slot, a user's keys together.
        let cluster = RedisCluster(
            seeds: [RedisAddress(host: "127.0.0.1", port: 7000)], configuration: RedisConfiguration(), eventLoopGroup: MultiThreadedEventLoopGroup.singleton,
            logger: Logger(label: "keys"))
        let gateway = RedisGateway(
            deployment: .cluster(cluster), configuration: CircuitBreakerConfiguration(), failOpen: true,
            metrics: ServiceMetrics(factory: NOOPMetricsHandler.instance), logger: Logger(label: "keys"))
        let mixed = keys + [feed.entryPrefix(Self.users[0]) + "v:x"]
        let groups = gateway.slotGroups(mixed)
        #expect(groups.count == Self.users.count)
        #expect(groups.contains { Set($0) == [0, mixed.count - 1] })
        #expect(groups.allSatisfy { group in Set(group.map { HashSlot.of(mixed[$0]) }).count == 1 })
    }
}
