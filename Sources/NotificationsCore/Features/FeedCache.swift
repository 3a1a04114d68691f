public import Logging
internal import RedisClient
internal import Synchronization

/// A response body and how the cache served it.
public struct CachedJSON: Sendable {
    public var body: [UInt8]
    public var cache: CacheStatus
}

/// `X-Cache`: `hit`/`miss` when Redis served or was filled, `bypass` when Redis was not used.
public enum CacheStatus: String, Sendable {
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
    private let inFlight = Mutex<[String: Task<[UInt8], any Error>]>([:])

    public init(gateway: RedisGateway, ttlSeconds: Int64, logger: Logger) {
        self.gateway = gateway
        self.ttlSeconds = ttlSeconds
        self.logger = logger
    }

    /// A version lives twice as long as an entry, refreshed by every write. Versions are random
    /// tokens, never reused, so an entry can only be found under the version it was made for;
    /// the one value that recurs is "no version" (`0`), and an entry made under it is older
    /// than the write that replaced it, so it has expired before that write's version can.
    var versionTTLSeconds: Int64 { 2 * ttlSeconds }

    static func versionKey(_ user: String) -> String { "feed:{\(user)}:v" }
    static func entryPrefix(_ user: String) -> String { "feed:{\(user)}:e:" }

    /// One round trip: the user's version and the entry stored under it (the entry key is
    /// built from the version inside the script, so both keys share the user's hash tag).
    static let lookup = RedisScript(
        """
        local version = redis.call('GET', KEYS[1]) or '0'
        return {version, redis.call('GET', ARGV[1] .. version .. ':' .. ARGV[2])}
        """)

    /// The cached body of `variant` for `user`, or `load()`'s, stored for the next reader.
    public func cached(user: String, variant: String, load: @escaping @Sendable () async throws -> [UInt8]) async throws -> CachedJSON {
        let prefix = Self.entryPrefix(user)
        let found = await gateway.call(.feedCache) { pool in
            try await pool.evaluate(Self.lookup, keys: [Self.versionKey(user)], arguments: [prefix, variant])
        }
        guard let found, let parts = found.array, parts.count == 2, let version = parts[0].string else {
            return CachedJSON(body: try await load(), cache: .bypass)
        }
        if case .bulkString(let body) = parts[1] { return CachedJSON(body: body, cache: .hit) }
        let entryKey = prefix + version + ":" + variant
        let body = try await singleFlight(entryKey, load)
        _ = await gateway.call(.feedCache) { [ttlSeconds] pool in
            try await pool.send(RedisCommand([Array("SET".utf8), Array(entryKey.utf8), body, Array("EX".utf8), Array(String(ttlSeconds).utf8)]))
        }
        return CachedJSON(body: body, cache: .miss)
    }

    /// After a write for `user`: later reads on every instance miss and reload.
    public func invalidate(user: String) async {
        let token = Array(Self.newVersion().utf8)
        let bumped = await gateway.call(.feedCache, essential: true) { [versionTTLSeconds] pool in
            try await pool.send(RedisCommand([Array("SET".utf8), Array(Self.versionKey(user).utf8), token, Array("EX".utf8), Array(String(versionTTLSeconds).utf8)]))
        }
        if bumped == nil {
            logger.warning("Feed cache invalidation failed; cached feed may be stale up to the TTL", metadata: ["user": "\(user)", "ttl_s": "\(ttlSeconds)"])
        }
    }

    /// 64 random bits: a version no other write will ever pick.
    static func newVersion() -> String {
        String(UInt64.random(in: 1...UInt64.max), radix: 36)
    }

    /// Concurrent misses of one entry on this instance share a single load.
    private func singleFlight(_ key: String, _ load: @escaping @Sendable () async throws -> [UInt8]) async throws -> [UInt8] {
        let (task, owner) = inFlight.withLock { tasks -> (Task<[UInt8], any Error>, Bool) in
            if let running = tasks[key] { return (running, false) }
            let task = Task { try await load() }
            tasks[key] = task
            return (task, true)
        }
        defer { if owner { _ = inFlight.withLock { $0.removeValue(forKey: key) } } }
        return try await task.value
    }
}
