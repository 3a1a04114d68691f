/// A GCRA (generic cell rate algorithm) limit: bursts of up to `limit` requests, refilled at
/// one request per `window / limit`.
public struct GCRALimit: Sendable, Equatable {
    public var limit: Int
    public var window: Duration

    public init(limit: Int, window: Duration) {
        precondition(limit >= 1 && window > .zero)
        self.limit = limit
        self.window = window
    }

    /// T: the time one request "costs".
    public var emissionInterval: Duration { window / limit }
    /// τ: how far ahead of now the theoretical arrival time may run (a full burst).
    public var burstTolerance: Duration { emissionInterval * limit }
}

/// The outcome of one GCRA check, with what the rate-limit headers need.
public struct GCRADecision: Sendable, Equatable {
    public var allowed: Bool
    /// Requests that could still be made right now.
    public var remaining: Int
    /// Time until the bucket is full again (`X-RateLimit-Reset`, `t`).
    public var resetAfter: Duration
    /// Time until the next request would pass (zero when allowed).
    public var retryAfter: Duration

    public init(allowed: Bool, remaining: Int, resetAfter: Duration, retryAfter: Duration) {
        self.allowed = allowed
        self.remaining = remaining
        self.resetAfter = resetAfter
        self.retryAfter = retryAfter
    }
}

/// GCRA over one key's theoretical arrival time (TAT): the same arithmetic the Redis Lua
/// script does, so the in-memory fallback enforces the same policy.
public enum GCRA {
    /// - Parameters:
    ///   - tat: the key's stored TAT, as time since an arbitrary epoch (nil: never seen).
    ///   - now: the current time on the same epoch.
    /// - Returns: the decision and the TAT to store (unchanged when rejected).
    public static func check(limit: GCRALimit, tat: Duration?, now: Duration) -> (GCRADecision, newTAT: Duration?) {
        let interval = limit.emissionInterval
        let tolerance = limit.burstTolerance
        let current = max(tat ?? now, now)
        let next = current + interval
        let allowAt = next - tolerance
        if now < allowAt {
            let remaining = 0
            return (GCRADecision(allowed: false, remaining: remaining, resetAfter: current - now, retryAfter: allowAt - now), tat)
        }
        let remaining = Int((now + tolerance - next).attoseconds / interval.attoseconds)
        return (GCRADecision(allowed: true, remaining: max(0, remaining), resetAfter: next - now, retryAfter: .zero), next)
    }
}

extension Duration {
    /// Exact, so "how many intervals fit" never loses one to floating-point rounding.
    var attoseconds: Int128 {
        Int128(components.seconds) * 1_000_000_000_000_000_000 + Int128(components.attoseconds)
    }
}
