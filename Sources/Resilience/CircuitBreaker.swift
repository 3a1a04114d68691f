/// The breaker's configuration: `REDIS_CIRCUIT_*`.
public struct CircuitBreakerConfiguration: Sendable, Equatable {
    /// Consecutive failures that open a closed circuit.
    public var failureThreshold: Int
    /// How long an open circuit waits before letting probes through (half-open).
    public var recoveryTimeout: Duration
    /// Successes in half-open that close the circuit; also the most calls half-open admits at once.
    public var successThreshold: Int

    public init(failureThreshold: Int = 5, recoveryTimeout: Duration = .seconds(30), successThreshold: Int = 2) {
        precondition(failureThreshold >= 1 && successThreshold >= 1)
        self.failureThreshold = failureThreshold
        self.recoveryTimeout = recoveryTimeout
        self.successThreshold = successThreshold
    }
}

/// `closed`, `half_open` or `open`, as the admin API and `/health` spell them.
public enum CircuitState: String, Sendable, Equatable {
    case closed
    case halfOpen = "half_open"
    case open

    /// `redis_circuit_breaker_state`: 0 closed, 1 half-open, 2 open.
    public var gaugeValue: Int {
        switch self {
        case .closed: 0
        case .halfOpen: 1
        case .open: 2
        }
    }
}

/// A state change, returned to the caller to log and export (the state machine does no I/O).
public struct CircuitTransition: Sendable, Equatable {
    public var from: CircuitState
    public var to: CircuitState
    public var reason: String
}

/// The circuit breaker as a pure state machine over a clock's instants.
///
/// CLOSED → OPEN after `failureThreshold` consecutive failures; OPEN → HALF-OPEN once
/// `recoveryTimeout` has passed; HALF-OPEN admits at most `successThreshold` calls at once
/// (others are rejected, they do not wait), closes after that many successes, and reopens
/// on any failure. A forced open (the admin drill) stays open, without probes, until reset.
public struct CircuitBreakerStateMachine<Instant: InstantProtocol>: Sendable where Instant.Duration == Duration {
    enum State: Sendable {
        case closed(consecutiveFailures: Int)
        case open(until: Instant)
        case halfOpen(inFlight: Int, successes: Int)
    }

    /// Whether a call may go to the protected service.
    public enum Permission: Sendable, Equatable {
        /// Call, then report the outcome with `record`. `probe`: the call is a half-open probe.
        case allowed(probe: Bool)
        case rejected
    }

    public let configuration: CircuitBreakerConfiguration
    private(set) var state: State = .closed(consecutiveFailures: 0)
    public private(set) var isForcedOpen = false

    public init(configuration: CircuitBreakerConfiguration) {
        self.configuration = configuration
    }

    /// The state as of `now` (an open circuit whose timeout has passed reads as half-open).
    public func state(at now: Instant) -> CircuitState {
        switch state {
        case .closed: return .closed
        case .open(let until): return !isForcedOpen && now >= until ? .halfOpen : .open
        case .halfOpen: return .halfOpen
        }
    }

    /// Closed with no failure counted (so not forced open either): `acquire` allows without a
    /// change and a success changes nothing.
    public var isHealthy: Bool {
        if case .closed(consecutiveFailures: 0) = state { return true }
        return false
    }

    public var consecutiveFailures: Int {
        if case .closed(let failures) = state { return failures }
        return 0
    }

    /// Asks to make one call. A transition to half-open is returned for logging.
    public mutating func acquire(at now: Instant) -> (Permission, CircuitTransition?) {
        switch state {
        case .closed:
            return (.allowed(probe: false), nil)
        case .open(let until):
            guard !isForcedOpen, now >= until else { return (.rejected, nil) }
            state = .halfOpen(inFlight: 1, successes: 0)
            return (.allowed(probe: true), CircuitTransition(from: .open, to: .halfOpen, reason: "recovery timeout elapsed"))
        case .halfOpen(let inFlight, let successes):
            guard inFlight + successes < configuration.successThreshold else { return (.rejected, nil) }
            state = .halfOpen(inFlight: inFlight + 1, successes: successes)
            return (.allowed(probe: true), nil)
        }
    }

    /// Reports a call's outcome; returns the transition it caused, if any.
    public mutating func record(success: Bool, probe: Bool, at now: Instant, reason: @autoclosure () -> String = "") -> CircuitTransition? {
        switch state {
        case .closed(let failures):
            guard !success else {
                if failures > 0 { state = .closed(consecutiveFailures: 0) }
                return nil
            }
            guard failures + 1 >= configuration.failureThreshold else {
                state = .closed(consecutiveFailures: failures + 1)
                return nil
            }
            state = .open(until: now.advanced(by: configuration.recoveryTimeout))
            return CircuitTransition(from: .closed, to: .open, reason: "\(failures + 1) consecutive failures, last: \(reason())")
        case .open:
            // A call admitted before the circuit opened finished late; it changes nothing.
            return nil
        case .halfOpen(let inFlight, let successes):
            guard probe else { return nil }
            guard success else {
                state = .open(until: now.advanced(by: configuration.recoveryTimeout))
                return CircuitTransition(from: .halfOpen, to: .open, reason: "probe failed: \(reason())")
            }
            let done = successes + 1
            guard done >= configuration.successThreshold else {
                state = .halfOpen(inFlight: max(0, inFlight - 1), successes: done)
                return nil
            }
            state = .closed(consecutiveFailures: 0)
            return CircuitTransition(from: .halfOpen, to: .closed, reason: "\(done) successful probes")
        }
    }

    /// Whether an essential write (cleanup that keeps shared state correct, such as a cache
    /// invalidation) may still go to the service: in every state but a real OPEN. A half-open
    /// circuit or an operator's drill says nothing about whether the service would take it.
    public func admitsEssential(at now: Instant) -> Bool {
        isForcedOpen || state(at: now) != .open
    }

    /// Reports a call that ended without telling anything about the service (its caller
    /// cancelled it, or it only shared a broken connection with a failure already reported):
    /// a half-open probe gives its slot back, nothing is counted.
    public mutating func release(probe: Bool) {
        guard probe, case .halfOpen(let inFlight, let successes) = state else { return }
        state = .halfOpen(inFlight: max(0, inFlight - 1), successes: successes)
    }

    /// The admin drill: open now and stay open (no probes) until `reset`.
    public mutating func forceOpen(at now: Instant) -> CircuitTransition? {
        let before = state(at: now)
        isForcedOpen = true
        state = .open(until: now)
        return before == .open ? nil : CircuitTransition(from: before, to: .open, reason: "forced open by an operator")
    }

    /// Clears a forced state and closes the circuit.
    public mutating func reset(at now: Instant) -> CircuitTransition? {
        let before = state(at: now)
        isForcedOpen = false
        state = .closed(consecutiveFailures: 0)
        return before == .closed ? nil : CircuitTransition(from: before, to: .closed, reason: "reset by an operator")
    }
}
