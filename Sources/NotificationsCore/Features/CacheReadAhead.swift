internal import RedisClient

/// One cache lookup a request is about to make, known before its handler runs.
///
/// A cached read costs two Redis round trips one after the other if the rate limit is checked
/// first and the cache looked up afterwards. With a probe, `RateLimiter` sends both in one
/// script; the handler's `FeedCache.cached` then finds the answer in `CacheReadAhead.current`
/// instead of asking Redis again.
public struct CacheProbe: Sendable, Equatable {
    let namespace: String
    let user: String
    let variant: String
    let versionKey: String
    let entryPrefix: String
    /// Taken before the read-ahead is sent: whether its answer may go to the near cache.
    let ticket: NearCache.Ticket?
}

/// What a probe found: the user's version and the entry stored under it (nil: a miss, which
/// the handler loads and stores under this version, as after its own lookup).
public struct CacheReadAhead: Sendable, Equatable {
    let probe: CacheProbe
    let version: String
    let body: [UInt8]?
    /// What is left of the entry's lifetime in Redis (its `PTTL`), when it has one.
    var remaining: Duration? = nil

    /// Set while the request's handler runs (see `serving`).
    @TaskLocal static var current: CacheReadAhead?

    /// Runs `body` (the rest of the request) with `readAhead` available to `FeedCache`.
    public static func serving<T>(_ readAhead: CacheReadAhead?, _ body: () async throws -> T) async rethrows -> T {
        guard let readAhead else { return try await body() }
        return try await $current.withValue(readAhead, operation: body)
    }
}

extension CacheReadAhead {
    /// The probe's lookup as a script call (`RedisGateway.evaluateTogether`).
    static func call(_ probe: CacheProbe) -> ScriptCall {
        ScriptCall(.feedCache, key: probe.versionKey, script: FeedCache.lookup, keys: [probe.versionKey], arguments: [probe.entryPrefix, probe.variant])
    }

    /// The lookup's reply as a read-ahead (nil: not a lookup's reply).
    static func decode(_ probe: CacheProbe, _ reply: RESPValue) -> CacheReadAhead? {
        guard let parts = reply.array, parts.count >= 2, let version = parts[0].string else { return nil }
        let body: [UInt8]? = if case .bulkString(let bytes) = parts[1] { bytes } else { nil }
        let remaining = parts.count >= 3 ? FeedCache.lifetime(pttl: parts[2]) : nil
        return CacheReadAhead(probe: probe, version: version, body: body, remaining: remaining)
    }
}

extension FeedCache {
    /// The probe of `cached(user:variant:)` for the same arguments; nil when the near cache
    /// has the answer (the rate-limit check then goes alone, and the handler reads it locally).
    public func probe(user: String, variant: String) -> CacheProbe? {
        if let near, near.contains(user: user, variant: variant) { return nil }
        return CacheProbe(
            namespace: namespace, user: user, variant: variant, versionKey: versionKey(user), entryPrefix: entryPrefix(user),
            ticket: near?.ticket(user: user))
    }

    /// The read-ahead answer for this lookup, if the request's rate-limit check brought one.
    func readAhead(user: String, variant: String) -> CacheReadAhead? {
        guard let found = CacheReadAhead.current, found.probe.namespace == namespace, found.probe.user == user,
              found.probe.variant == variant else { return nil }
        return found
    }
}
