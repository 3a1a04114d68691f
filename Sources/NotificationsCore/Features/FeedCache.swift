public import Logging
internal import RedisClient
internal import Synchronization

/// A response body and how the cache served it.
public struct CachedJSON: Sendable {
    public var body: [UInt8]
    public var cache: CacheStatus
    /// For a hit: which cache had it (`X-Cache-Tier`).
    public var tier: CacheTier?

    init(body: [UInt8], cache: CacheStatus, tier: CacheTier? = nil) {
        self.body = body
        self.cache = cache
        self.tier = tier
    }
}

/// `X-Cache-Tier` of a hit: this instance's near cache, or Redis.
public enum CacheTier: String, Sendable {
    case local, redis
}

/// `X-Cache`: `hit`/`miss` when Redis served or was filled, `bypass` when Redis was not used.
public enum CacheStatus: String, Sendable, CaseIterable {
    case hit, miss, bypass
}

/// Caches feed responses in Redis under a per-user version, and its rule for Redis failures.
///
/// Every write for a user sets the user's version to a new random token (one atomic command,
/// seen by every instance), and entries are keyed by version, so the next read after a write
/// misses: read-your-writes across instances. Invalidation is an essential write: tried even
/// while the circuit is half-open or forced open, skipped only when the circuit is really open. A cold entry is loaded from MongoDB once per instance
/// (single flight). Redis unusable: read MongoDB, `X-Cache: bypass` (never a reason to fail).
/// An invalidation Redis refuses (e.g. out of memory) leaves entries stale for at most the TTL.
public final class FeedCache: Sendable {
    let gateway: RedisGateway
    let ttlSeconds: Int64
    let logger: Logger
    /// The key prefix, and so the versions: a cache of another namespace is invalidated on its
    /// own (preferences are not dropped by every notification created for their user).
    let namespace: String
    private let inFlight = Mutex<[String: Task<Fill, any Error>]>([:])
    /// This instance's copy of hot entries (`FEED_NEAR_CACHE`), in front of Redis.
    let near: NearCache?

    public init(gateway: RedisGateway, ttlSeconds: Int64, logger: Logger, namespace: String = "feed", near: NearCache? = nil) {
        self.near = near
        self.gateway = gateway
        self.ttlSeconds = ttlSeconds
        self.logger = logger
        self.namespace = namespace
    }

    /// A version lives twice as long as an entry, refreshed by every write. Versions are random
    /// tokens, never reused, so an entry can only be found under the version it was made for;
    /// the one value that recurs is "no version" (`0`), and an entry made under it is older
    /// than the write that replaced it, so it has expired before that write's version can.
    var versionTTLSeconds: Int64 { 2 * ttlSeconds }

    func versionKey(_ user: String) -> String { "\(namespace):{\(user)}:v" }
    func entryPrefix(_ user: String) -> String { "\(namespace):{\(user)}:e:" }

    /// One round trip: the user's version, the entry stored under it and what is left of the
    /// entry's lifetime (the entry key is built from the version inside the script, so both keys
    /// share the user's hash tag).
    static let lookup = RedisScript(
        """
        local version = redis.call('GET', KEYS[1]) or '0'
        local entry = ARGV[1] .. version .. ':' .. ARGV[2]
        return {version, redis.call('GET', entry), redis.call('PTTL', entry)}
        """)

    /// A body loaded for the cache, and how long it stays true when that is shorter than the
    /// cache's lifetime (a page holding a notification that expires sooner).
    public struct Fill: Sendable {
        public var body: [UInt8]
        public var lifetime: Duration?
    }

    /// The cached body of `variant` for `user`, or `load()`'s, stored for the next reader.
    public func cached(user: String, variant: String, load: @escaping @Sendable () async throws -> [UInt8]) async throws -> CachedJSON {
        try await cached(user: user, variant: variant, fill: { Fill(body: try await load(), lifetime: nil) })
    }

    /// As `cached(user:variant:load:)`, for bodies that may stop being true before the cache's lifetime.
    public func cached(user: String, variant: String, fill load: @escaping @Sendable () async throws -> Fill) async throws -> CachedJSON {
        if let body = near?.lookup(user: user, variant: variant) { return CachedJSON(body: body, cache: .hit, tier: .local) }
        let prefix = entryPrefix(user)
        let version: String
        // Taken before the Redis read was sent (the read-ahead's, by the probe).
        let ticket: NearCache.Ticket?
        if let found = readAhead(user: user, variant: variant) {
            ticket = found.probe.ticket
            if let body = found.body {
                return keptNear(CachedJSON(body: body, cache: .hit, tier: .redis), user: user, variant: variant, ticket: ticket, remaining: found.remaining)
            }
            version = found.version
        } else {
            ticket = near?.ticket(user: user)
            let found = await gateway.call(.feedCache, key: versionKey(user)) { redis in
                try await redis.evaluate(Self.lookup, keys: [versionKey(user)], arguments: [prefix, variant])
            }
            guard let found, let parts = found.array, parts.count >= 2, let foundVersion = parts[0].string else {
                return CachedJSON(body: try await load().body, cache: .bypass)
            }
            if case .bulkString(let body) = parts[1] {
                let remaining = parts.count >= 3 ? Self.lifetime(pttl: parts[2]) : nil
                return keptNear(CachedJSON(body: body, cache: .hit, tier: .redis), user: user, variant: variant, ticket: ticket, remaining: remaining)
            }
            version = foundVersion
        }
        let entryKey = prefix + version + ":" + variant
        let fill = try await singleFlight(entryKey, load)
        let lifetime = min(.seconds(ttlSeconds), fill.lifetime ?? .seconds(ttlSeconds))
        // Not stored when it is already past its lifetime: the next read loads it again.
        guard lifetime >= .milliseconds(1) else { return CachedJSON(body: fill.body, cache: .miss) }
        _ = await gateway.call(.feedCache, key: entryKey) { redis in
            try await redis.send(
                RedisCommand([Array("SET".utf8), Array(entryKey.utf8), fill.body, Array("PX".utf8), Array(String(lifetime.milliseconds).utf8)]))
        }
        return keptNear(CachedJSON(body: fill.body, cache: .miss), user: user, variant: variant, ticket: ticket, remaining: fill.lifetime.map { _ in lifetime })
    }

    /// What is left of an entry's lifetime, from its `PTTL` (negative: no entry, or no expiry).
    static func lifetime(pttl: RESPValue) -> Duration? {
        pttl.integer.flatMap { $0 >= 0 ? .milliseconds($0) : nil }
    }

    /// Offers what Redis had (or what was loaded under the version Redis gave) to the near cache;
    /// a copy of a Redis entry keeps only what is left of that entry's lifetime.
    private func keptNear(_ cached: CachedJSON, user: String, variant: String, ticket: NearCache.Ticket?, remaining: Duration? = nil) -> CachedJSON {
        near?.store(user: user, variant: variant, body: cached.body, ticket: ticket, remaining: remaining)
        return cached
    }

    /// After a write for `user`: later reads on every instance miss and reload.
    public func invalidate(user: String) async {
        let token = Array(Self.newVersion().utf8)
        let bumped = await gateway.call(.feedCache, key: versionKey(user), essential: true) { [versionTTLSeconds] redis in
            try await redis.send(RedisCommand([Array("SET".utf8), Array(versionKey(user).utf8), token, Array("EX".utf8), Array(String(versionTTLSeconds).utf8)]))
        }
        // After the bump: a read sent from now on sees the new version, and one sent before it
        // (whose ticket this voids) cannot put the old answer back.
        near?.invalidate(user: user)
        if bumped == nil {
            logger.warning("Feed cache invalidation failed; cached feed may be stale up to the TTL", metadata: ["user": "\(user)", "ttl_s": "\(ttlSeconds)"])
        }
    }

    /// 64 random bits: a version no other write will ever pick.
    static func newVersion() -> String {
        String(UInt64.random(in: 1...UInt64.max), radix: 36)
    }

    /// For each user, its version and the entry `variant` stored under it: one round trip for
    /// a whole batch (one per slot on a cluster, sent together). nil when Redis is unusable
    /// for any of them (the caller reads MongoDB).
    public func lookupMany(users: [String], variant: String) async -> [(version: String, body: [UInt8]?)]? {
        guard !users.isEmpty else { return [] }
        let keys = users.map(versionKey)
        let groups = await gateway.callEach(.feedCache, keys: keys) { indices, redis in
            try await redis.evaluate(Self.lookupMany, keys: indices.map { keys[$0] }, arguments: [variant])
        }
        var found = [(version: String, body: [UInt8]?)](repeating: ("0", nil), count: users.count)
        for (indices, reply) in groups {
            guard let parts = reply?.array, parts.count == 2 * indices.count else { return nil }
            for (position, index) in indices.enumerated() {
                let body: [UInt8]? = if case .bulkString(let bytes) = parts[2 * position + 1] { bytes } else { nil }
                found[index] = (parts[2 * position].string ?? "0", body)
            }
        }
        return found
    }

    /// Stores entries found missing by `lookupMany`, each under the version it was read with
    /// (one round trip, or one per slot; best effort).
    public func storeMany(_ entries: [(user: String, version: String, body: [UInt8])], variant: String) async {
        guard !entries.isEmpty else { return }
        let keys = entries.map { entryPrefix($0.user) + $0.version + ":" + variant }
        _ = await gateway.callEach(.feedCache, keys: keys) { [ttlSeconds] indices, redis in
            try await redis.evaluate(
                Self.storeMany, keys: indices.map { keys[$0] },
                arguments: [String(ttlSeconds)] + indices.map { String(decoding: entries[$0].body, as: UTF8.self) })
        }
    }

    /// `invalidate` for many users in one round trip (a fan-out batch; one per slot on a cluster).
    public func invalidateMany(users: [String]) async {
        guard !users.isEmpty else { return }
        let keys = users.map(versionKey)
        let groups = await gateway.callEach(.feedCache, keys: keys, essential: true) { [versionTTLSeconds] indices, redis in
            try await redis.evaluate(Self.bumpMany, keys: indices.map { keys[$0] }, arguments: [String(versionTTLSeconds), Self.newVersion()])
        }
        if let near { for user in users { near.invalidate(user: user) } }
        let failed = groups.filter { $0.result == nil }.reduce(0) { $0 + $1.indices.count }
        if failed > 0 {
            logger.warning("Feed cache invalidation failed; cached feeds may be stale up to the TTL", metadata: ["users": "\(failed)", "ttl_s": "\(ttlSeconds)"])
        }
    }

    /// Entry keys are the version key with `v` replaced by `e:<version>:<variant>`.
    static let lookupMany = RedisScript(
        """
        local out = {}
        for i, key in ipairs(KEYS) do
          local version = redis.call('GET', key) or '0'
          out[2 * i - 1] = version
          out[2 * i] = redis.call('GET', string.sub(key, 1, -2) .. 'e:' .. version .. ':' .. ARGV[1]) or false
        end
        return out
        """)

    static let storeMany = RedisScript(
        """
        for i, key in ipairs(KEYS) do
          redis.call('SET', key, ARGV[i + 1], 'EX', ARGV[1])
        end
        return #KEYS
        """)

    /// One new token for the batch, made unique per user by appending the key (tokens never repeat).
    static let bumpMany = RedisScript(
        """
        for _, key in ipairs(KEYS) do
          redis.call('SET', key, ARGV[2] .. key, 'EX', ARGV[1])
        end
        return #KEYS
        """)

    /// Concurrent misses of one entry on this instance share a single load. The load is detached:
    /// it serves every waiter, so it must not carry the first one's task-locals (its Redis
    /// request scope, its request id).
    private func singleFlight(_ key: String, _ load: @escaping @Sendable () async throws -> Fill) async throws -> Fill {
        let (task, owner) = inFlight.withLock { tasks -> (Task<Fill, any Error>, Bool) in
            if let running = tasks[key] { return (running, false) }
            let task = Task.detached { try await load() }
            tasks[key] = task
            return (task, true)
        }
        defer { if owner { _ = inFlight.withLock { $0.removeValue(forKey: key) } } }
        return try await task.value
    }
}
