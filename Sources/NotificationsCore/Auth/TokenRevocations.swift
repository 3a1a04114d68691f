public import Logging
public import MongoStore
internal import RedisClient
internal import Resilience
internal import Synchronization

/// Revoked user tokens: `POST /v1/users/{userId}/tokens/revoke` refuses every token of the user
/// issued at or before that second, on every instance within 5 s while Redis is up and within
/// 30 s while it is down.
///
/// MongoDB holds the fact (`token_revocations`: `{_id: user, revokedAt: seconds}`). Redis holds
/// a copy per user (`revoked:{user}`, "0" for none), set by every revocation and otherwise filled
/// from MongoDB with `SET NX` and a short lifetime (a fill never overwrites a revocation; a fill
/// that predates a revocation Redis could not take lives at most `fillLifetime`). Each instance
/// keeps what it read for `redisFreshness` while the circuit is closed, `mongoFreshness` while it
/// is not (then it reads MongoDB, counted as a fallback). So a token costs a Redis read per user
/// every few seconds, and MongoDB a read per user per fill lifetime.
public final class TokenRevocations: Sendable {
    struct Entry {
        var revokedAt: Int64
        var checked: ContinuousClock.Instant
    }

    static let redisFreshness = Duration.seconds(4)
    static let mongoFreshness = Duration.seconds(25)
    static let fillLifetime = Duration.seconds(25)
    /// Users remembered at most; the table is dropped whole beyond (each then reads again).
    static let rememberedLimit = 100_000

    let revocations: MongoCollection
    let gateway: RedisGateway
    let streams: StreamPublisher
    let hub: StreamHub
    let metrics: ServiceMetrics
    let logger: Logger
    private let cache = Mutex<[String: Entry]>([:])

    public init(pool: MongoClientPool, gateway: RedisGateway, hub: StreamHub, metrics: ServiceMetrics, logger: Logger) {
        revocations = pool.collection("token_revocations")
        self.gateway = gateway
        streams = StreamPublisher(gateway: gateway)
        self.hub = hub
        self.metrics = metrics
        self.logger = logger
    }

    static func redisKey(_ user: String) -> String { "revoked:{\(user)}" }

    /// Refuses the user's tokens issued at or before `now`'s second; ends the user's streams
    /// here and (through their channel) on every instance. Returns that second.
    @discardableResult
    public func revoke(user: String, now: Timestamp) async throws -> Int64 {
        let second = now.milliseconds / 1000
        // The fact first: once this returns, every instance finds it within the bounds.
        _ = try await mongoOperation {
            try await revocations.update(
                ["_id": .string(user)], ["$max": ["revokedAt": .int64(second)], "$set": ["at": .datetime(now.milliseconds)]], upsert: true)
        }
        remember(user, revokedAt: second)
        let copied = await gateway.call(.tokenRevocation, key: Self.redisKey(user), essential: true) { redis in
            try await redis.send(.set(Self.redisKey(user), Array(String(second).utf8)))
        }
        if copied == nil {
            metrics.fallback(.tokenRevocation)
            logger.warning("Revocation not copied to Redis; other instances see it within 30 s", metadata: ["user": "\(user)"])
        }
        hub.revoked(user: user, atSecond: second)
        await streams.publish([(user, .revoked(atSecond: second))])
        return second
    }

    /// Whether `token` was issued at or before its user's revocation.
    public func isRevoked(_ token: UserToken) async throws -> Bool {
        try await revokedAt(user: token.userId) >= token.issuedAt
    }

    /// The user's revocation second (0: never revoked), as fresh as the bounds require.
    public func revokedAt(user: String) async throws -> Int64 {
        let now = ContinuousClock.now
        let freshness = gateway.state(forKey: Self.redisKey(user)) == .closed ? Self.redisFreshness : Self.mongoFreshness
        let known = cache.withLock { $0[user] }
        if let known, now - known.checked < freshness { return known.revokedAt }
        if let copy = await gateway.call(.tokenRevocation, key: Self.redisKey(user), { redis in try await redis.send(.get(Self.redisKey(user))) }) {
            if let value = copy.string.flatMap(Int64.init) {
                remember(user, revokedAt: value)
                return value
            }
            // No copy: fill it from MongoDB, never over a revocation set meanwhile.
            let stored = try await fromMongo(user, fallback: known)
            _ = await gateway.call(.tokenRevocation, key: Self.redisKey(user)) { redis in
                try await redis.send(
                    .set(Self.redisKey(user), Array(String(stored).utf8), onlyIfAbsent: true, ttlMilliseconds: Self.fillLifetime.milliseconds))
            }
            return stored
        }
        metrics.fallback(.tokenRevocation)
        return try await fromMongo(user, fallback: known)
    }

    /// The revocations of many users at once, for the streams' shared poll while Redis is
    /// unusable: what was not read within `mongoFreshness` comes from MongoDB in one query.
    public func revokedAt(users: [String]) async throws -> [String: Int64] {
        let now = ContinuousClock.now
        let stale = cache.withLock { cache in users.filter { user in cache[user].map { now - $0.checked >= Self.mongoFreshness } ?? true } }
        if !stale.isEmpty {
            metrics.fallback(.tokenRevocation)
            let stored = try await mongoOperation { try await revocations.find(["_id": ["$in": .array(stale.map { .string($0) })]]) }
            var storedAt: [String: Int64] = [:]
            for document in stored { if let user = document["_id"]?.string { storedAt[user] = document["revokedAt"]?.int64 ?? 0 } }
            for user in stale { remember(user, revokedAt: storedAt[user] ?? 0) }
        }
        return cache.withLock { cache in Dictionary(users.map { ($0, cache[$0]?.revokedAt ?? 0) }, uniquingKeysWith: max) }
    }

    /// The stored revocation; when MongoDB cannot answer, the last one known (however old),
    /// else the failure (the request gets 503: a token is not let through unchecked).
    private func fromMongo(_ user: String, fallback known: Entry?) async throws -> Int64 {
        do {
            let document = try await mongoOperation { try await revocations.findOne(["_id": .string(user)]) }
            let value = document?["revokedAt"]?.int64 ?? 0
            remember(user, revokedAt: value)
            return value
        } catch {
            if let known { return known.revokedAt }
            throw error
        }
    }

    private func remember(_ user: String, revokedAt: Int64) {
        cache.withLock { cache in
            if cache.count >= Self.rememberedLimit { cache.removeAll(keepingCapacity: true) }
            // Never lower: a revocation seen here stays seen.
            cache[user] = Entry(revokedAt: max(revokedAt, cache[user]?.revokedAt ?? 0), checked: .now)
        }
    }
}
