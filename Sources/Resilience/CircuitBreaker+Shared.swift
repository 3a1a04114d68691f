internal import Synchronization

/// A circuit breaker shared by concurrent callers: the state machine behind a lock, read
/// against a clock. Transitions are handed to `onTransition` (logging, metrics) outside the lock.
public final class CircuitBreaker<C: Clock>: Sendable where C.Duration == Duration, C.Instant: Sendable {
    public typealias Permission = CircuitBreakerStateMachine<C.Instant>.Permission

    private let machine: Mutex<CircuitBreakerStateMachine<C.Instant>>
    private let clock: C
    private let onTransition: @Sendable (CircuitTransition) -> Void

    public init(configuration: CircuitBreakerConfiguration, clock: C, onTransition: @escaping @Sendable (CircuitTransition) -> Void) {
        self.machine = Mutex(CircuitBreakerStateMachine(configuration: configuration))
        self.clock = clock
        self.onTransition = onTransition
    }

    public var configuration: CircuitBreakerConfiguration { machine.withLock { $0.configuration } }

    public var state: CircuitState {
        let now = clock.now
        return machine.withLock { $0.state(at: now) }
    }

    public var isForcedOpen: Bool { machine.withLock { $0.isForcedOpen } }
    public var consecutiveFailures: Int { machine.withLock { $0.consecutiveFailures } }

    public func acquire() -> Permission {
        let now = clock.now
        let (permission, transition) = machine.withLock { $0.acquire(at: now) }
        if let transition { onTransition(transition) }
        return permission
    }

    public func record(success: Bool, probe: Bool, reason: String = "") {
        let now = clock.now
        if let transition = machine.withLock({ $0.record(success: success, probe: probe, at: now, reason: reason) }) {
            onTransition(transition)
        }
    }

    /// Permission for an essential write: a normal one when the circuit gives it, else a
    /// non-probe call in half-open or forced open (it takes no probe slot); rejected only by a
    /// real OPEN.
    public func acquireEssential() -> Permission {
        let permission = acquire()
        if case .allowed = permission { return permission }
        let now = clock.now
        return machine.withLock { $0.admitsEssential(at: now) } ? .allowed(probe: false) : .rejected
    }

    public func release(probe: Bool) {
        machine.withLock { $0.release(probe: probe) }
    }

    public func forceOpen() {
        let now = clock.now
        if let transition = machine.withLock({ $0.forceOpen(at: now) }) { onTransition(transition) }
    }

    public func reset() {
        let now = clock.now
        if let transition = machine.withLock({ $0.reset(at: now) }) { onTransition(transition) }
    }
}
