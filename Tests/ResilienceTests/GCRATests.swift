import Resilience
import Testing

@Suite("GCRA arithmetic")
struct GCRATests {
    let limit = GCRALimit(limit: 10, window: .seconds(1))

    @Test func burstOfLimitThenRejectWithRetryAfterOneInterval() {
        var tat: Duration?
        let now = Duration.seconds(1000)
        for expectedRemaining in stride(from: 9, through: 0, by: -1) {
            let (decision, next) = GCRA.check(limit: limit, tat: tat, now: now)
            #expect(decision.allowed)
            #expect(decision.remaining == expectedRemaining)
            tat = next
        }
        let (rejected, unchanged) = GCRA.check(limit: limit, tat: tat, now: now)
        #expect(!rejected.allowed)
        #expect(rejected.remaining == 0)
        #expect(rejected.retryAfter == .milliseconds(100))
        #expect(rejected.resetAfter == .seconds(1))
        #expect(unchanged == tat, "a rejected request costs nothing")
    }

    @Test func refillsAtOneRequestPerInterval() {
        var tat: Duration?
        for _ in 0..<10 { tat = GCRA.check(limit: limit, tat: tat, now: .zero).1 }
        #expect(!GCRA.check(limit: limit, tat: tat, now: .milliseconds(99)).0.allowed)
        let (decision, _) = GCRA.check(limit: limit, tat: tat, now: .milliseconds(100))
        #expect(decision.allowed)
        #expect(decision.remaining == 0)
        // After a full window the whole burst is back.
        let (full, _) = GCRA.check(limit: limit, tat: tat, now: .seconds(1))
        #expect(full.remaining == 9)
    }

    @Test func idleKeyIsLikeANewKey() {
        let (fresh, _) = GCRA.check(limit: limit, tat: nil, now: .seconds(5))
        let (idle, _) = GCRA.check(limit: limit, tat: .seconds(1), now: .seconds(5))
        #expect(fresh == idle)
    }
}
