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
        /// The Redis node whose invalidations keep it exact (a cluster master; "" for a single Redis).
        var node: String
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

        /// Drops every entry kept exact by `node`'s invalidations.
        mutating func remove(node: String) {
            for (user, entries) in users {
                let kept = entries.filter { $0.value.node != node }
                guard kept.count != entries.count else { continue }
                for entry in entries.values where entry.node == node { bytes -= entry.cost + user.utf8.count }
                users[user] = kept.isEmpty ? nil : kept
            }
        }
    }

    struct State {
        /// The nodes whose invalidations flow ("" alone for a single Redis; each master on a cluster).
        var activeNodes: Set<String> = []
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

        mutating func flush(node: String) {
            session &+= 1
            current.remove(node: node)
            previous.remove(node: node)
        }
    }

    static let stripes = 1024
    /// The version keys whose changes drop entries: `<namespace>:{<user>}:v`.
    let namespace: String
    let maxBytes: Int
    let ttl: Duration
    let metrics: ServiceMetrics
    let logger: Logger
    /// The node a user's keys live on, on a cluster: the master of the version key's slot (nil:
    /// a single Redis, node "", and no key is built for asking).
    let nodeOf: (@Sendable (_ versionKey: String) -> String)?
    private let state = Mutex(State())

    /// - Parameter nodeOf: on a cluster, the master of a version key's slot (entries are kept per
    ///   master: each master's invalidations keep its own users' entries exact).
    public init(
        namespace: String = "feed", maxBytes: Int, ttl: Duration, metrics: ServiceMetrics, logger: Logger,
        nodeOf: (@Sendable (_ versionKey: String) -> String)? = nil
    ) {
        self.nodeOf = nodeOf
        self.namespace = namespace
        self.maxBytes = maxBytes
        self.ttl = ttl
        self.metrics = metrics
        self.logger = logger
    }

    /// The key prefix to track: every key of the namespace (entry keys are ignored on arrival).
    public var trackedPrefix: String { "\(namespace):{" }

    /// The nodes whose invalidations flow now.
    var activeNodes: Set<String> { state.withLock { $0.activeNodes } }

    /// Whether invalidations flow from at least one node.
    public var isActive: Bool { state.withLock { !$0.activeNodes.isEmpty } }

    private func node(of user: String) -> String { nodeOf?("\(namespace):{\(user)}:v") ?? "" }
    public var bytes: Int { state.withLock { $0.bytes } }

    /// The body stored for `variant` of `user`, if it is still exact.
    func lookup(user: String, variant: String, now: ContinuousClock.Instant = .now) -> [UInt8]? {
        let node = node(of: user)
        let body = state.withLock { state -> [UInt8]? in
            guard state.activeNodes.contains(node) else { return nil }
            if let entry = state.current.users[user]?[variant] {
                if entry.expires > now && entry.node == node { return entry.body }
                state.current.users[user]?[variant] = nil
                state.current.bytes -= entry.cost + user.utf8.count
                return nil
            }
            guard let entry = state.previous.users[user]?[variant] else { return nil }
            state.previous.users[user]?[variant] = nil
            state.previous.bytes -= entry.cost + user.utf8.count
            guard entry.expires > now, entry.node == node else { return nil }
            Self.insert(entry, user: user, variant: variant, into: &state, maxBytes: maxBytes)
            return entry.body
        }
        if body != nil { metrics.nearCacheHit() }
        return body
    }

    /// Whether `lookup` would answer now (without counting a hit or moving the entry).
    func contains(user: String, variant: String, now: ContinuousClock.Instant = .now) -> Bool {
        let node = node(of: user)
        return state.withLock { state in
            guard state.activeNodes.contains(node) else { return false }
            let entry = state.current.users[user]?[variant] ?? state.previous.users[user]?[variant]
            return entry.map { $0.expires > now && $0.node == node } ?? false
        }
    }

    /// Taken before the Redis read whose answer may be stored (nil: not trusted now, store nothing).
    func ticket(user: String) -> Ticket? {
        let node = node(of: user)
        return state.withLock { state in
            guard state.activeNodes.contains(node) else { return nil }
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
        let node = node(of: user)
        let entry = Entry(body: body, expires: now + lifetime, node: node)
        let bytes = state.withLock { state -> Int? in
            guard state.activeNodes.contains(node), state.session == ticket.session, state.epochs[state.stripe(user)] == ticket.epoch else { return nil }
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

    /// Drops what `node`'s invalidations kept exact (a cluster master whose breaker opened); "" is everything.
    public func flush(_ reason: FlushReason, node: String) {
        guard !node.isEmpty else { return flush(reason) }
        let left = state.withLock { state -> Int in
            state.flush(node: node)
            return state.bytes
        }
        metrics.nearCacheFlushed(reason)
        metrics.nearCacheBytes(left)
        logger.warning("Feed near cache flushed for one Redis node; its users' reads go to Redis", metadata: ["reason": "\(reason.rawValue)", "node": "\(node)"])
    }

    /// Whether invalidations flow (`InvalidationTracking.onActive`) from the one Redis. Going down flushes.
    public func setActive(_ active: Bool) {
        setActive(active, node: "")
    }

    /// Whether `node`'s invalidations flow. Going down drops what they kept exact.
    public func setActive(_ active: Bool, node: String) {
        let changed = state.withLock { state -> Bool in
            guard state.activeNodes.contains(node) != active else { return false }
            if active {
                state.activeNodes.insert(node)
                state.session &+= 1
            } else {
                state.activeNodes.remove(node)
                if node.isEmpty { state.flush() } else { state.flush(node: node) }
            }
            return true
        }
        guard changed else { return }
        var metadata: Logger.Metadata = [:]
        if !node.isEmpty { metadata["node"] = "\(node)" }
        if active {
            logger.info("Feed near cache on: Redis invalidations flow", metadata: metadata)
        } else {
            metrics.nearCacheFlushed(.connection)
            metrics.nearCacheBytes(state.withLock { $0.bytes })
            metadata["reason"] = "connection"
            logger.warning("Feed near cache off and flushed: the invalidation connection dropped", metadata: metadata)
        }
    }
}
