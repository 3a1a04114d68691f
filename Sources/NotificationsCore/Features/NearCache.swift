public import Logging
internal import Synchronization

/// Hot feed pages and unread counts kept in this process (`FEED_NEAR_CACHE=true`), served with
/// no Redis round trip, and kept exact by Redis's own invalidations (`InvalidationTracking`).
///
/// Trusted only while invalidations flow: the moment the invalidation connection drops or the
/// circuit opens it is flushed, and it fills again only after a new tracking session is up.
/// A fill is kept only if no invalidation of its user arrived since the read it came from was
/// sent (`Ticket`): an invalidation can overtake a reply, as they travel on different
/// connections. A write on this instance drops its user's entries at once (read-your-writes
/// here); on other instances, after Redis delivers the invalidation. An invalidation Redis
/// never sends (the write's version bump failed) is bounded by the entry lifetime, the feed
/// cache's TTL, as in Redis.
///
/// Bounded by bytes: two generations, each at most half of `maxBytes`; when the current one is
/// full it becomes the previous one and the old previous one is dropped whole (no per-entry
/// LRU bookkeeping on the hot path; an entry read from the previous generation moves up).
public final class NearCache: Sendable {
    /// Proof that no invalidation of a user was seen between taking it and storing a fill.
    public struct Ticket: Sendable, Equatable {
        let session: UInt64
        let epoch: UInt64
    }

    /// Why everything was dropped: `feed_near_cache_flushes_total{reason}`.
    public enum FlushReason: String, Sendable, CaseIterable {
        /// The invalidation connection (or its tracking twin) dropped.
        case connection
        /// The circuit breaker opened.
        case breaker
        /// Redis said every key may have changed (`FLUSHALL`, `FLUSHDB`).
        case server
    }

    struct Entry {
        var body: [UInt8]
        var expires: ContinuousClock.Instant
        var cost: Int { body.count + 96 }
    }

    struct Generation {
        var users: [String: [String: Entry]] = [:]
        var bytes = 0

        mutating func remove(user: String) -> Int {
            guard let removed = users.removeValue(forKey: user) else { return 0 }
            let cost = removed.values.reduce(0) { $0 + $1.cost + user.utf8.count }
            bytes -= cost
            return cost
        }
    }

    struct State {
        var active = false
        /// Grows with every tracking session and every flush: tickets of before are void.
        var session: UInt64 = 1
        /// Invalidations seen, per stripe of users (a fill checks its user's stripe).
        var epochs = [UInt64](repeating: 0, count: NearCache.stripes)
        var current = Generation()
        var previous = Generation()

        var bytes: Int { current.bytes + previous.bytes }

        func stripe(_ user: String) -> Int { user.hashValue & (NearCache.stripes - 1) }

        mutating func drop(user: String) {
            epochs[stripe(user)] &+= 1
            _ = current.remove(user: user)
            _ = previous.remove(user: user)
        }

        mutating func flush() {
            session &+= 1
            current = Generation()
            previous = Generation()
        }
    }

    static let stripes = 1024
    /// The version keys whose changes drop entries: `<namespace>:{<user>}:v`.
    let namespace: String
    let maxBytes: Int
    let ttl: Duration
    let metrics: ServiceMetrics
    let logger: Logger
    private let state = Mutex(State())

    public init(namespace: String = "feed", maxBytes: Int, ttl: Duration, metrics: ServiceMetrics, logger: Logger) {
        self.namespace = namespace
        self.maxBytes = maxBytes
        self.ttl = ttl
        self.metrics = metrics
        self.logger = logger
    }

    /// The key prefix to track: every key of the namespace (entry keys are ignored on arrival).
    public var trackedPrefix: String { "\(namespace):{" }

    public var isActive: Bool { state.withLock { $0.active } }
    public var bytes: Int { state.withLock { $0.bytes } }

    /// The body stored for `variant` of `user`, if it is still exact.
    func lookup(user: String, variant: String, now: ContinuousClock.Instant = .now) -> [UInt8]? {
        let body = state.withLock { state -> [UInt8]? in
            guard state.active else { return nil }
            if let entry = state.current.users[user]?[variant] {
                if entry.expires > now { return entry.body }
                state.current.users[user]?[variant] = nil
                state.current.bytes -= entry.cost + user.utf8.count
                return nil
            }
            guard let entry = state.previous.users[user]?[variant] else { return nil }
            state.previous.users[user]?[variant] = nil
            state.previous.bytes -= entry.cost + user.utf8.count
            guard entry.expires > now else { return nil }
            Self.insert(entry, user: user, variant: variant, into: &state, maxBytes: maxBytes)
            return entry.body
        }
        if body != nil { metrics.nearCacheHit() }
        return body
    }

    /// Whether `lookup` would answer now (without counting a hit or moving the entry).
    func contains(user: String, variant: String, now: ContinuousClock.Instant = .now) -> Bool {
        state.withLock { state in
            guard state.active else { return false }
            let entry = state.current.users[user]?[variant] ?? state.previous.users[user]?[variant]
            return entry.map { $0.expires > now } ?? false
        }
    }

    /// Taken before the Redis read whose answer may be stored (nil: not trusted now, store nothing).
    func ticket(user: String) -> Ticket? {
        state.withLock { state in
            guard state.active else { return nil }
            return Ticket(session: state.session, epoch: state.epochs[state.stripe(user)])
        }
    }

    /// Keeps `body` unless anything may have invalidated it since `ticket` was taken.
    /// - Parameter remaining: what is left of the Redis entry's own lifetime, for a copy of one:
    ///   the copy expires with it, so a missed invalidation is still bounded by the TTL from the
    ///   moment the body was loaded, not from when it was copied.
    func store(user: String, variant: String, body: [UInt8], ticket: Ticket?, remaining: Duration? = nil, now: ContinuousClock.Instant = .now) {
        guard let ticket else { return }
        let lifetime = remaining.map { min(ttl, max(.zero, $0)) } ?? ttl
        guard lifetime > .zero else { return }
        let entry = Entry(body: body, expires: now + lifetime)
        let bytes = state.withLock { state -> Int? in
            guard state.active, state.session == ticket.session, state.epochs[state.stripe(user)] == ticket.epoch else { return nil }
            Self.insert(entry, user: user, variant: variant, into: &state, maxBytes: maxBytes)
            return state.bytes
        }
        if let bytes { metrics.nearCacheBytes(bytes) }
    }

    private static func insert(_ entry: Entry, user: String, variant: String, into state: inout State, maxBytes: Int) {
        let cost = entry.cost + user.utf8.count
        guard cost <= maxBytes / 2 else { return }
        if let old = state.current.users[user]?[variant] { state.current.bytes -= old.cost + user.utf8.count }
        if state.current.bytes + cost > maxBytes / 2 {
            state.previous = state.current
            state.current = Generation()
        }
        state.current.users[user, default: [:]][variant] = entry
        state.current.bytes += cost
    }

    /// A write of `user` on this instance (after its version bump): later reads here miss.
    public func invalidate(user: String) {
        state.withLock { $0.drop(user: user) }
    }

    /// Keys Redis reports changed; nil means all of them.
    public func invalidate(keys: [[UInt8]]?) {
        guard let keys else {
            flush(.server)
            return
        }
        let prefix = Array(trackedPrefix.utf8)
        let suffix = Array("}:v".utf8)
        // Entry keys change on every fill; they are immutable under their version, so only a version key's change matters.
        let users = keys.compactMap { key -> String? in
            guard key.count > prefix.count + suffix.count, key.starts(with: prefix), key.suffix(suffix.count).elementsEqual(suffix) else { return nil }
            return String(decoding: key[prefix.count..<(key.count - suffix.count)], as: UTF8.self)
        }
        guard !users.isEmpty else { return }
        state.withLock { state in
            for user in users { state.drop(user: user) }
        }
        metrics.nearCacheInvalidations(users.count)
    }

    /// Drops everything and voids every ticket taken before.
    public func flush(_ reason: FlushReason) {
        let had = state.withLock { state -> Int in
            let bytes = state.bytes
            state.flush()
            return bytes
        }
        metrics.nearCacheFlushed(reason)
        metrics.nearCacheBytes(0)
        logger.warning("Feed near cache flushed; reads go to Redis", metadata: ["reason": "\(reason.rawValue)", "bytes": "\(had)"])
    }

    /// Whether invalidations flow (`InvalidationTracking.onActive`). Going down flushes.
    public func setActive(_ active: Bool) {
        let changed = state.withLock { state -> Bool in
            guard state.active != active else { return false }
            state.active = active
            if !active { state.flush() } else { state.session &+= 1 }
            return true
        }
        guard changed else { return }
        if active {
            logger.info("Feed near cache on: Redis invalidations flow")
        } else {
            metrics.nearCacheFlushed(.connection)
            metrics.nearCacheBytes(0)
            logger.warning("Feed near cache off and flushed: the invalidation connection dropped", metadata: ["reason": "connection"])
        }
    }
}
