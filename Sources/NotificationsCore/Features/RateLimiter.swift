public import Logging
internal import RedisClient
internal import Resilience

/// What the rate-limit headers say about one request.
public struct RateLimitDecision: Sendable, Equatable {
    public enum Outcome: Sendable, Equatable {
        case allowed
        /// Over the limit: 429 with `Retry-After` (whole seconds, at least 1).
        case limited(retryAfterSeconds: Int)
        /// Redis unusable and `REDIS_FAIL_OPEN=false`: 503 `rate_limiter_unavailable`.
        case unavailable(retryAfterSeconds: Int)
        /// The key's policy is `unlimited`.
        case unlimited
    }

    /// `X-RateLimit-Status`.
    public enum Status: String, Sendable {
        case enforced
        case bypassedFailOpen = "bypassed-fail-open"
    }

    public var outcome: Outcome
    public var status: Status
    /// The policy's name in `RateLimit-Policy` / `RateLimit`.
    public var policyName: String
    public var limit: Int
    public var windowSeconds: Int
    public var remaining: Int
    /// Whole seconds until the bucket is full again.
    public var resetSeconds: Int
}

/// Rate limiting, and its rule for Redis failures.
///
/// Redis healthy: one GCRA Lua script per request (atomic, one round trip, Redis's clock),
/// so the limit is global across instances. Redis unusable: fail open with the same GCRA in
/// memory per instance (`bypassed-fail-open`, `rate_limit_bypass_total`), or fail closed (503).
public final class RateLimiter: Sendable {
    let policies: RateLimitPolicies
    let gateway: RedisGateway
    let local: InMemoryRateLimiter
    let metrics: ServiceMetrics
    let logger: Logger

    public init(policies: RateLimitPolicies, gateway: RedisGateway, metrics: ServiceMetrics, logger: Logger) {
        self.policies = policies
        self.gateway = gateway
        self.metrics = metrics
        self.logger = logger
        self.local = InMemoryRateLimiter()
    }

    /// Checks (and counts) one request of API key `keyName` on a route of `group`.
    public func check(keyName: String, group: RouteGroup) async -> RateLimitDecision {
        await check(keyName: keyName, group: group, readingAhead: nil).decision
    }

    /// `check`, and in the same Redis round trip the cache lookup `probe` the request's handler
    /// will make (when the request is allowed and Redis answered).
    public func check(keyName: String, group: RouteGroup, readingAhead probe: CacheProbe?) async -> (decision: RateLimitDecision, readAhead: CacheReadAhead?) {
        await check(policies.policy(forKey: keyName, group: group), subject: keyName, readingAhead: probe)
    }

    /// A user token's request: the `user` policy, one bucket per user, across instances.
    public func check(user: String, group: RouteGroup, readingAhead probe: CacheProbe?) async -> (decision: RateLimitDecision, readAhead: CacheReadAhead?) {
        // Braced, so no API key name can share a user's bucket by accident.
        await check(policies.userPolicy(group: group), subject: Self.subject(user: user), readingAhead: probe)
    }

    private func check(
        _ resolved: RateLimitPolicies.Resolved, subject keyName: String, readingAhead probe: CacheProbe?
    ) async -> (decision: RateLimitDecision, readAhead: CacheReadAhead?) {
        guard let limitCount = resolved.policy.limit else {
            // No limit to check: the lookup is the handler's one round trip anyway.
            return (RateLimitDecision(outcome: .unlimited, status: .enforced, policyName: resolved.name, limit: 0, windowSeconds: 0, remaining: 0, resetSeconds: 0), nil)
        }
        let limit = GCRALimit(limit: limitCount, window: .milliseconds(resolved.policy.windowMilliseconds))
        let bucket = Self.bucket(scope: resolved.scope, subject: keyName)
        let checked: (GCRADecision, CacheReadAhead?)?
        if let apart = probe, gateway.isCluster, HashSlot.of(apart.versionKey) != HashSlot.of(bucket) {
            // On a cluster, a read-ahead of another slot (an API key's bucket, a user's cache)
            // cannot share the script: it goes at the same time, to its own master, and both
            // replies are awaited as one, so the request still waits for one round trip.
            let (rate, lookup) = await gateway.evaluateTogether(
                ScriptCall(.rateLimit, key: bucket, script: Self.script, keys: [bucket], arguments: Self.arguments(limit: limit)),
                CacheReadAhead.call(apart))
            let decision = rate.flatMap { try? Self.decode($0, probe: nil).0 }
            // A reply that is not the script's (through `call` it would have thrown): the fallback it causes is counted.
            if rate != nil && decision == nil { metrics.fallback(.rateLimit) }
            checked = decision.map { ($0, lookup.flatMap { CacheReadAhead.decode(apart, $0) }) }
        } else {
            checked = await gateway.call(.rateLimit, key: bucket) { redis in
                try await Self.checkInRedis(redis, bucket: bucket, limit: limit, probe: probe)
            }
        }
        if let (decision, readAhead) = checked {
            return (make(decision, limit: limit, name: resolved.name, status: .enforced), readAhead)
        }
        guard gateway.failOpen else {
            let decision = RateLimitDecision(
                outcome: .unavailable(retryAfterSeconds: gateway.retryAfterSeconds), status: .enforced, policyName: resolved.name,
                limit: limitCount, windowSeconds: limit.windowSeconds, remaining: 0, resetSeconds: 0)
            return (decision, nil)
        }
        metrics.rateLimitBypassed()
        logger.debug("Rate limit bypassed: Redis unusable, in-memory limiter used", metadata: ["api_key": "\(keyName)"])
        return (make(local.check(bucket: bucket, limit: limit), limit: limit, name: resolved.name, status: .bypassedFailOpen), nil)
    }

    /// A user's bucket carries the user's hash tag (`user:{id}`: the read-ahead of the user's
    /// cache joins its script on a cluster); an API key's bucket is a tag of its own.
    static func bucket(scope: String, subject: String) -> String {
        subject.contains("{") ? "ratelimit:\(scope):\(subject)" : "ratelimit:{\(scope):\(subject)}"
    }

    /// The subject of a user token's bucket.
    static func subject(user: String) -> String { "user:{\(user)}" }

    private func make(_ decision: GCRADecision, limit: GCRALimit, name: String, status: RateLimitDecision.Status) -> RateLimitDecision {
        RateLimitDecision(
            outcome: decision.allowed ? .allowed : .limited(retryAfterSeconds: max(1, decision.retryAfter.wholeSecondsRoundedUp)),
            status: status, policyName: name, limit: limit.limit, windowSeconds: limit.windowSeconds,
            remaining: decision.remaining, resetSeconds: decision.resetAfter.wholeSecondsRoundedUp)
    }

    /// GCRA on Redis's clock (`TIME`), in microseconds; the same arithmetic as `GCRA.check`.
    /// With a second key (a cache version key) and an allowed request, it also does
    /// `FeedCache.lookup`'s work: the version and the entry stored under it.
    static let script = RedisScript(
        """
        local t = redis.call('TIME')
        local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
        local interval = tonumber(ARGV[1])
        local tolerance = tonumber(ARGV[2])
        local tat = tonumber(redis.call('GET', KEYS[1]) or now)
        if tat < now then tat = now end
        local next_tat = tat + interval
        local allow_at = next_tat - tolerance
        if now < allow_at then
          return {0, 0, math.ceil(tat - now), math.ceil(allow_at - now)}
        end
        redis.call('SET', KEYS[1], string.format('%.0f', next_tat), 'PX', math.ceil((next_tat - now) / 1000) + 1)
        local out = {1, math.floor((now + tolerance - next_tat) / interval + 1e-6), math.ceil(next_tat - now), 0}
        if KEYS[2] then
          local version = redis.call('GET', KEYS[2]) or '0'
          local entry = ARGV[3] .. version .. ':' .. ARGV[4]
          out[5] = version
          out[6] = redis.call('GET', entry)
          out[7] = redis.call('PTTL', entry)
        end
        return out
        """)

    static func checkInRedis(
        _ redis: any RedisCommands, bucket: String, limit: GCRALimit, probe: CacheProbe? = nil
    ) async throws -> (GCRADecision, CacheReadAhead?) {
        var keys = [bucket]
        var arguments = Self.arguments(limit: limit)
        if let probe {
            keys.append(probe.versionKey)
            arguments += [probe.entryPrefix, probe.variant]
        }
        return try decode(try await redis.evaluate(script, keys: keys, arguments: arguments), probe: probe)
    }

    /// The script's arguments for `limit`: the emission interval and the tolerance, in microseconds.
    static func arguments(limit: GCRALimit) -> [String] {
        let interval = Double(limit.emissionInterval.microseconds)
        return [format6(interval), format6(interval * Double(limit.limit))]
    }

    /// The script's reply: the decision, and with `probe` the cache lookup it did.
    static func decode(_ reply: RESPValue, probe: CacheProbe?) throws -> (GCRADecision, CacheReadAhead?) {
        guard let parts = reply.array, parts.count >= 4, case let values = parts.prefix(4).compactMap(\.integer), values.count == 4 else {
            throw RedisError.protocolError("rate-limit script answered \(reply)")
        }
        let decision = GCRADecision(
            allowed: values[0] == 1, remaining: Int(values[1]), resetAfter: .microseconds(values[2]), retryAfter: .microseconds(values[3]))
        guard let probe, parts.count >= 6, let version = parts[4].string else { return (decision, nil) }
        let body: [UInt8]? = if case .bulkString(let bytes) = parts[5] { bytes } else { nil }
        let remaining = parts.count >= 7 ? FeedCache.lifetime(pttl: parts[6]) : nil
        return (decision, CacheReadAhead(probe: probe, version: version, body: body, remaining: remaining))
    }

    private static func format6(_ value: Double) -> String {
        // Plain decimal (Lua's tonumber reads it exactly enough); never exponent notation.
        let whole = value.rounded(.down)
        let fraction = Int(((value - whole) * 1_000_000).rounded())
        return "\(Int64(whole)).\(String(repeating: "0", count: 6 - String(fraction).count))\(fraction)"
    }
}

/// Which routes a request belongs to, for per-route-group policies: `read` (GET) or `write`.
public enum RouteGroup: String, Sendable, CaseIterable {
    case read, write
}

extension GCRALimit {
    /// The window in whole seconds for `w=` (at least 1).
    var windowSeconds: Int { max(1, window.wholeSecondsRoundedUp) }
}
