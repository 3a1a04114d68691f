import Resilience
import Synchronization
import Testing

@Suite("Lease renewal while work runs")
struct LeaseRenewalTests {
    struct Failure: Error {}

    /// Waits until `renewals` reaches `count` (a loaded machine may run the renewals late: no
    /// fixed sleep decides the outcome), at most ten seconds.
    static func awaitRenewals(_ renewals: borrowing Atomic<Int>, _ count: Int) async throws {
        let deadline = ContinuousClock.now + .seconds(10)
        while renewals.load(ordering: .relaxed) < count && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(5))
        }
    }

    @Test func renewsWhileTheBodyRunsAndNeverAfter() async throws {
        let renewals = Atomic(0)
        let answer = try await whileRenewing(every: .milliseconds(10), {
            renewals.add(1, ordering: .relaxed)
            return true
        }) {
            try await Self.awaitRenewals(renewals, 3)
            return 42
        }
        #expect(answer == 42)
        let atReturn = renewals.load(ordering: .relaxed)
        #expect(atReturn >= 3)
        try await Task.sleep(for: .milliseconds(100))
        #expect(renewals.load(ordering: .relaxed) == atReturn)
    }

    @Test func stopsRenewingOnceTheLeaseIsLostButTheBodyGoesOn() async throws {
        let renewals = Atomic(0)
        let finished = try await whileRenewing(every: .milliseconds(10), {
            renewals.add(1, ordering: .relaxed)
            return false
        }) {
            // The first renewal, then ten intervals in which a second one must not come.
            try await Self.awaitRenewals(renewals, 1)
            try await Task.sleep(for: .milliseconds(100))
            return true
        }
        #expect(finished)
        #expect(renewals.load(ordering: .relaxed) == 1)
    }

    @Test func theBodysErrorIsThrownAndEndsTheRenewals() async throws {
        let renewals = Atomic(0)
        await #expect(throws: Failure.self) {
            try await whileRenewing(every: .milliseconds(10), {
                renewals.add(1, ordering: .relaxed)
                return true
            }) { () async throws -> Int in
                try await Task.sleep(for: .milliseconds(50))
                throw Failure()
            }
        }
        let atThrow = renewals.load(ordering: .relaxed)
        try await Task.sleep(for: .milliseconds(100))
        #expect(renewals.load(ordering: .relaxed) == atThrow)
    }
}
