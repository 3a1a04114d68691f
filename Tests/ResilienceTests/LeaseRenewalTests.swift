import Resilience
import Synchronization
import Testing

@Suite("Lease renewal while work runs")
struct LeaseRenewalTests {
    struct Failure: Error {}

    @Test func renewsWhileTheBodyRunsAndNeverAfter() async throws {
        let renewals = Atomic(0)
        let answer = try await whileRenewing(every: .milliseconds(10), {
            renewals.add(1, ordering: .relaxed)
            return true
        }) {
            try await Task.sleep(for: .milliseconds(200))
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
            try await Task.sleep(for: .milliseconds(150))
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
