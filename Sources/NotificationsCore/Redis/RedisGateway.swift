public import Logging
public import RedisClient
public import Resilience
internal import NIOCore
internal import Synchronization

/// The one way features reach Redis: per-call deadline (the pool's), the circuit breaker,
/// and the bookkeeping of every fallback.
///
/// A call returns `nil` instead of throwing when Redis cannot be used (the circuit is open,
/// half-open and already probing, or the call failed): the calling feature then takes its
/// own fallback, which this gateway has already counted in
/// `redis_operations_fallback_total{operation}`. Whether to fail open or closed is each
/// feature's decision, made with `failOpen`.
public final class RedisGateway: Sendable {
    public let pool: RedisConnectionPool
    public let breaker: CircuitBreaker<ContinuousClock>
    public let failOpen: Bool
    let metrics: ServiceMetrics
    let logger: Logger

    public init(pool: RedisConnectionPool, configuration: CircuitBreakerConfiguration, failOpen: Bool, metrics: ServiceMetrics, logger: Logger) {
        self.pool = pool
        self.failOpen = failOpen
        self.metrics = metrics
        self.logger = logger
        self.breaker = CircuitBreaker(configuration: configuration, clock: ContinuousClock()) { transition in
            metrics.circuitState(transition.to.gaugeValue)
            let line: Logger.Message = switch transition.to {
            case .open: "Circuit breaker OPENED"
            case .halfOpen: "Circuit breaker HALF-OPEN"
            case .closed: "Circuit breaker CLOSED"
            }
            let level: Logger.Level = switch transition.to {
            case .open: .error
            case .halfOpen: .warning
            case .closed: .info
            }
            logger.log(level: level, line, metadata: ["service": "redis", "from": "\(transition.from.rawValue)", "reason": "\(transition.reason)"])
        }
    }

    public var state: CircuitState { breaker.state }

    /// Set for the duration of one HTTP request (see `withRequestScope`).
    @TaskLocal static var requestScope: RequestScope?

    /// Runs one request's work so that once a Redis call of it fails, its later Redis calls
    /// take their fallbacks at once: a request waits for at most one Redis deadline.
    public static func withRequestScope<T>(_ body: () async throws -> T) async rethrows -> T {
        try await $requestScope.withValue(RequestScope(), operation: body)
    }

    /// Runs `body` against Redis if the breaker allows it; nil means "take your fallback".
    /// - Parameter essential: cleanup that must be tried even after an earlier call of the same
    ///   request failed (cache invalidation after a write, lock extension and release).
    public func call<T: Sendable>(
        _ operation: ServiceMetrics.Operation, essential: Bool = false, _ body: (RedisConnectionPool) async throws -> T
    ) async -> T? {
        let scope = Self.requestScope
        guard essential || scope?.redisFailed != true, case .allowed(let probe) = breaker.acquire() else {
            metrics.fallback(operation)
            return nil
        }
        do {
            let result = try await body(pool)
            breaker.record(success: true, probe: probe)
            return result
        } catch {
            scope?.markFailed()
            metrics.circuitFailure()
            breaker.record(success: false, probe: probe, reason: "\(error)")
            metrics.fallback(operation)
            logger.debug("Redis call failed; falling back", metadata: ["operation": "\(operation.rawValue)", "error": "\(error)"])
            return nil
        }
    }

    /// Whether Redis answers a PING now. Only called while the circuit is closed, through the
    /// breaker like any call (an open circuit means Redis is not called at all).
    /// `/health` waits at most `within` for the answer; the PING itself keeps the normal
    /// deadline (a shorter one would close a connection other calls are pipelined on) and,
    /// when late, finishes in the background.
    public func ping(within: Duration = .seconds(1)) async -> Bool {
        guard breaker.state == .closed else { return false }
        return await firstOf({ await self.call(.healthCheck) { pool in try await pool.send(.ping) } == .simpleString("PONG") },
                             orAfter: within, fallback: false)
    }

    /// Seconds until an open circuit lets a probe through (at least 1): the `Retry-After` of fail-closed 503s.
    public var retryAfterSeconds: Int {
        state == .open ? max(1, Int(breaker.configuration.recoveryTimeout.components.seconds)) : 1
    }
}

/// Per-request memory of a failed Redis call.
final class RequestScope: Sendable {
    private let failed = Atomic<Bool>(false)

    var redisFailed: Bool { failed.load(ordering: .relaxed) }
    func markFailed() { failed.store(true, ordering: .relaxed) }
}
