internal import Synchronization

/// A circuit breaker shared by concurrent callers: the state machine behind a lock, read
/// against a clock. Transitions are handed to `onTransition` (logging, metrics) outside the lock.
public final class CircuitBreaker<C: Clock>: Sendable where C.Duration == Duration, C.Instant: Sendable {
    public typealias Permission = CircuitBreakerStateMachine<C.Instant>.Permission

    private let machine: Mutex<CircuitBreakerStateMachine<C.Instant>>
    private let clock: C
    private let onTransition: @Sendable (CircuitTransition) -> Void
    /// Whether the circuit is closed with no failure counted (`isHealthy`), as of the last
    /// change under the lock. In that state `acquire` allows every call and a success changes
    /// nothing, so the healthy path of a call (every call, nearly always) reads this instead of
    /// taking the lock and reading the clock twice: on a cluster, where a request makes two
    /// calls, those were a measurable part of the CPU per request. A call that reads it just
    /// as another's failure opens the circuit goes ahead, as one that came a moment earlier would.
    private let healthy = Atomic<Bool>(true)

    public init(configuration: CircuitBreakerConfiguration, clock: C, onTransition: @escaping @Sendable (CircuitTransition) -> Void) {
        self.machine = Mutex(CircuitBreakerStateMachine(configuration: configuration))
        self.clock = clock
        self.onTransition = onTransition
    }

    /// Runs `change` on the state machine under the lock, and updates `healthy` there too.
    private func change<T>(_ change: (inout CircuitBreakerStateMachine<C.Instant>) -> T) -> T {
        machine.withLock { machine in
            defer { healthy.store(machine.isHealthy, ordering: .releasing) }
            return change(&machine)
        }
    }

    public var configuration: CircuitBreakerConfiguration { machine.withLock { $0.configuration } }

    public var state: CircuitState {
        if healthy.load(ordering: .acquiring) { return .closed }
        let now = clock.now
        return machine.withLock { $0.state(at: now) }
    }

    public var isForcedOpen: Bool { machine.withLock { $0.isForcedOpen } }
    public var consecutiveFailures: Int { machine.withLock { $0.consecutiveFailures } }

    public func acquire() -> Permission {
        if healthy.load(ordering: .acquiring) { return .allowed(probe: false) }
        let now = clock.now
        let (permission, transition) = change { $0.acquire(at: now) }
        if let transition { onTransition(transition) }
        return permission
    }

    public func record(success: Bool, probe: Bool, reason: String = "") {
        if success && healthy.load(ordering: .acquiring) { return }
        let now = clock.now
        if let transition = change({ $0.record(success: success, probe: probe, at: now, reason: reason) }) {
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
        guard probe else { return }
        change { $0.release(probe: probe) }
    }

    public func forceOpen() {
        let now = clock.now
        if let transition = change({ $0.forceOpen(at: now) }) { onTransition(transition) }
    }

    public func reset() {
        let now = clock.now
        if let transition = change({ $0.reset(at: now) }) { onTransition(transition) }
    }
}
