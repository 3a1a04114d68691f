import Resilience
import Synchronization
import Testing

@Suite("Circuit breaker state machine (manual clock)")
struct CircuitBreakerTests {
    final class Transitions: Sendable {
        let recorded = Mutex<[CircuitTransition]>([])
        var all: [CircuitTransition] { recorded.withLock { $0 } }
        var states: [CircuitState] { all.map(\.to) }
    }

    func make(failures: Int = 5, recovery: Duration = .seconds(30), successes: Int = 2) -> (CircuitBreaker<ManualClock>, ManualClock, Transitions) {
        let clock = ManualClock()
        let transitions = Transitions()
        let breaker = CircuitBreaker(
            configuration: .init(failureThreshold: failures, recoveryTimeout: recovery, successThreshold: successes), clock: clock
        ) { transition in transitions.recorded.withLock { $0.append(transition) } }
        return (breaker, clock, transitions)
    }

    func fail(_ breaker: CircuitBreaker<ManualClock>, times: Int) {
        for _ in 0..<times {
            guard case .allowed(let probe) = breaker.acquire() else { return }
            breaker.record(success: false, probe: probe, reason: "refused")
        }
    }

    @Test func opensAfterThresholdConsecutiveFailuresOnly() {
        let (breaker, _, transitions) = make()
        fail(breaker, times: 4)
        #expect(breaker.state == .closed)
        #expect(breaker.consecutiveFailures == 4)
        // A success resets the count: failures must be consecutive.
        breaker.record(success: true, probe: false)
        fail(breaker, times: 4)
        #expect(breaker.state == .closed)
        fail(breaker, times: 1)
        #expect(breaker.state == .open)
        #expect(transitions.states == [.open])
        #expect(transitions.all[0].reason.contains("5 consecutive failures"))
        #expect(breaker.acquire() == .rejected, "an open circuit does not call")
    }

    @Test func halfOpenAfterRecoveryTimeoutThenClosesAfterSuccesses() {
        let (breaker, clock, transitions) = make()
        fail(breaker, times: 5)
        clock.advance(by: .seconds(29))
        #expect(breaker.state == .open)
        #expect(breaker.acquire() == .rejected)
        clock.advance(by: .seconds(1))
        #expect(breaker.state == .halfOpen)
        #expect(breaker.acquire() == .allowed(probe: true))
        breaker.record(success: true, probe: true)
        #expect(breaker.state == .halfOpen)
        #expect(breaker.acquire() == .allowed(probe: true))
        breaker.record(success: true, probe: true)
        #expect(breaker.state == .closed)
        #expect(transitions.states == [.open, .halfOpen, .closed])
    }

    @Test func anyFailureInHalfOpenReopensForAnotherTimeout() {
        let (breaker, clock, transitions) = make()
        fail(breaker, times: 5)
        clock.advance(by: .seconds(30))
        #expect(breaker.acquire() == .allowed(probe: true))
        breaker.record(success: false, probe: true, reason: "timeout")
        #expect(breaker.state == .open)
        clock.advance(by: .seconds(29))
        #expect(breaker.acquire() == .rejected)
        clock.advance(by: .seconds(1))
        #expect(breaker.state == .halfOpen)
        #expect(transitions.states == [.open, .halfOpen, .open])
    }

    @Test func halfOpenNeverAdmitsMoreThanTheSuccessThresholdAtOnce() async {
        let (breaker, clock, _) = make(successes: 2)
        fail(breaker, times: 5)
        clock.advance(by: .seconds(30))
        let admitted = await withTaskGroup(of: Bool.self) { group in
            for _ in 0..<100 {
                group.addTask { breaker.acquire() != .rejected }
            }
            return await group.reduce(0) { $0 + ($1 ? 1 : 0) }
        }
        #expect(admitted == 2)
        // Once one probe succeeds, only one more is admitted (two successes close it).
        breaker.record(success: true, probe: true)
        #expect(breaker.acquire() == .rejected, "two probes are still counted: one in flight, one succeeded")
        breaker.record(success: true, probe: true)
        #expect(breaker.state == .closed)
    }

    /// A closed circuit with no failure counted answers `acquire`, a success and `state` from
    /// a flag, without the lock: failures still count from there, concurrent ones open it once,
    /// and the first failure makes the next success go through the lock again (it resets the count).
    @Test func theHealthyPathStillSeesEveryFailure() async {
        let (breaker, _, transitions) = make(failures: 5)
        fail(breaker, times: 1)
        #expect(breaker.consecutiveFailures == 1)
        breaker.record(success: true, probe: false)
        #expect(breaker.consecutiveFailures == 0, "a success after a failure resets the count")
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<64 {
                group.addTask {
                    guard case .allowed(let probe) = breaker.acquire() else { return }
                    breaker.record(success: false, probe: probe, reason: "refused")
                }
            }
        }
        #expect(breaker.state == .open)
        #expect(transitions.states == [.open], "opened once")
        #expect(breaker.acquire() == .rejected)
        breaker.reset()
        #expect(breaker.state == .closed)
        #expect(breaker.acquire() == .allowed(probe: false), "healthy again after a reset")
    }

    @Test func forcedOpenStaysOpenWithoutProbesUntilReset() {
        let (breaker, clock, transitions) = make()
        breaker.forceOpen()
        #expect(breaker.state == .open && breaker.isForcedOpen)
        clock.advance(by: .seconds(3600))
        #expect(breaker.state == .open)
        #expect(breaker.acquire() == .rejected)
        breaker.reset()
        #expect(breaker.state == .closed && !breaker.isForcedOpen)
        #expect(breaker.acquire() == .allowed(probe: false))
        #expect(transitions.states == [.open, .closed])
    }

    @Test func resetClosesANaturallyOpenCircuit() {
        let (breaker, _, _) = make()
        fail(breaker, times: 5)
        breaker.reset()
        #expect(breaker.state == .closed)
        #expect(breaker.consecutiveFailures == 0)
    }

    @Test func lateResultsOfCallsAdmittedBeforeOpeningChangeNothing() {
        let (breaker, _, _) = make(failures: 1)
        #expect(breaker.acquire() == .allowed(probe: false))
        #expect(breaker.acquire() == .allowed(probe: false))
        breaker.record(success: false, probe: false)
        #expect(breaker.state == .open)
        breaker.record(success: true, probe: false)
        #expect(breaker.state == .open)
    }

    /// Essential writes (cache invalidation, lock release) go through a half-open or forced-open
    /// circuit without taking a probe slot; only a real OPEN skips them.
    @Test func essentialWritesPassEveryStateButARealOpen() {
        let (breaker, clock, _) = make()
        #expect(breaker.acquireEssential() == .allowed(probe: false))
        fail(breaker, times: 5)
        #expect(breaker.acquireEssential() == .rejected, "while OPEN, Redis is not called")
        clock.advance(by: .seconds(30))
        #expect(breaker.acquire() == .allowed(probe: true))
        #expect(breaker.acquire() == .allowed(probe: true))
        #expect(breaker.acquire() == .rejected, "both probe slots are taken")
        #expect(breaker.acquireEssential() == .allowed(probe: false))
        breaker.reset()
        breaker.forceOpen()
        #expect(breaker.acquire() == .rejected)
        #expect(breaker.acquireEssential() == .allowed(probe: false))
    }

    /// A probe whose caller cancelled it gives its slot back and counts as nothing.
    @Test func releasedProbeFreesItsSlotWithoutCounting() {
        let (breaker, clock, transitions) = make()
        fail(breaker, times: 5)
        clock.advance(by: .seconds(30))
        #expect(breaker.acquire() == .allowed(probe: true))
        #expect(breaker.acquire() == .allowed(probe: true))
        breaker.release(probe: true)
        #expect(breaker.state == .halfOpen)
        #expect(breaker.acquire() == .allowed(probe: true), "the released slot is free again")
        breaker.release(probe: false)
        #expect(transitions.states == [.open, .halfOpen])
    }

    @Test func gaugeValues() {
        #expect(CircuitState.closed.gaugeValue == 0 && CircuitState.halfOpen.gaugeValue == 1 && CircuitState.open.gaugeValue == 2)
        #expect(CircuitState.halfOpen.rawValue == "half_open")
    }
}
