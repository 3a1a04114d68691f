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
    /// Called on every transition to OPEN (the near cache flushes).
    private let openListeners: Listeners

    public init(pool: RedisConnectionPool, configuration: CircuitBreakerConfiguration, failOpen: Bool, metrics: ServiceMetrics, logger: Logger) {
        self.pool = pool
        self.failOpen = failOpen
        self.metrics = metrics
        self.logger = logger
        let listeners = Listeners()
        self.openListeners = listeners
        self.breaker = CircuitBreaker(configuration: configuration, clock: ContinuousClock()) { transition in
            if transition.to == .open { listeners.callAll() }
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

    /// Runs `listener` each time the circuit opens (also when an operator forces it open).
    public func onOpen(_ listener: @escaping @Sendable () -> Void) {
        openListeners.add(listener)
    }

    /// Set for the duration of one HTTP request (see `withRequestScope`).
    @TaskLocal static var requestScope: RequestScope?

    /// Runs one request's work so that once a Redis call of it fails, its later Redis calls
    /// take their fallbacks at once: a request waits for at most one Redis deadline.
    public static func withRequestScope<T>(_ body: () async throws -> T) async rethrows -> T {
        try await $requestScope.withValue(RequestScope(), operation: body)
    }

    /// Runs `body` against Redis if the breaker allows it; nil means "take your fallback".
    /// - Parameter essential: a write that keeps shared state correct (cache invalidation, lock
    ///   extension and release, storing an idempotent response): tried even after an earlier
    ///   call of the same request failed, and while the circuit is half-open or forced open
    ///   (Redis may well take it); only a real OPEN circuit skips it.
    ///
    /// A cancelled call (its caller gave up) counts as nothing, and a call that only shared a
    /// connection with another call's failure is not counted again: one connection failure
    /// is one breaker failure.
    public func call<T: Sendable>(
        _ operation: ServiceMetrics.Operation, essential: Bool = false, _ body: (RedisConnectionPool) async throws -> T
    ) async -> T? {
        if case .reply(let value) = await attempt(operation, essential: essential, body) { return value }
        return nil
    }

    /// What became of a call: for writes whose effect must be undone when their outcome is
    /// unknown (a `SET NX` that timed out may still have been applied).
    public enum Outcome<T: Sendable>: Sendable {
        case reply(T)
        /// Redis was not called (circuit open, or an earlier call of the request failed).
        case notAttempted
        /// Sent, but no reply: Redis may or may not have applied it.
        case failed
    }

    /// `call`, telling apart "not sent" from "sent, outcome unknown".
    public func attempt<T: Sendable>(
        _ operation: ServiceMetrics.Operation, essential: Bool = false, _ body: (RedisConnectionPool) async throws -> T
    ) async -> Outcome<T> {
        let scope = Self.requestScope
        let permission: CircuitBreaker<ContinuousClock>.Permission =
            essential ? breaker.acquireEssential() : (scope?.redisFailed == true ? .rejected : breaker.acquire())
        guard case .allowed(let probe) = permission else {
            metrics.fallback(operation)
            return .notAttempted
        }
        do {
            let result = try await body(pool)
            breaker.record(success: true, probe: probe)
            return .reply(result)
        } catch {
            let redisError = error as? RedisError
            if redisError == .cancelled || Task.isCancelled {
                breaker.release(probe: probe)
                return .failed
            }
            scope?.markFailed()
            metrics.fallback(operation)
            if let redisError, !redisError.isRedisFailure {
                breaker.release(probe: probe)
            } else {
                metrics.circuitFailure()
                breaker.record(success: false, probe: probe, reason: "\(error)")
            }
            logger.debug("Redis call failed; falling back", metadata: ["operation": "\(operation.rawValue)", "error": "\(error)"])
            return .failed
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

/// Callbacks registered after the breaker that calls them was made.
final class Listeners: Sendable {
    private let list = Mutex<[@Sendable () -> Void]>([])

    func add(_ listener: @escaping @Sendable () -> Void) { list.withLock { $0.append(listener) } }
    func callAll() { for listener in list.withLock({ $0 }) { listener() } }
}
