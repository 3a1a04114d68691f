import Logging
import Metrics
import MongoStore
@testable import NotificationsCore
import Synchronization
import Testing
import TestSupport

@Suite("Background retries: one worker, batches, a bounded queue")
struct RetryQueueTests {
    static let metrics = ServiceMetrics(factory: NOOPMetricsHandler.instance)

    @Test func theQueueIsBoundedAndBacksOffWhileMongoDBIsDown() async throws {
        let attempts = AttemptCounter()
        var policy = RetryQueue<Int>.Policy()
        policy.capacity = 3
        policy.firstAttemptAfter = .zero
        policy.backoffBase = .milliseconds(100)
        policy.backoffCap = .milliseconds(400)
        let queue = RetryQueue<Int>(.lateInserts, policy: policy, metrics: Self.metrics, logger: Logger(label: "test")) { _ in
            attempts.increment()
            throw MongoError.unavailable("down")
        }
        #expect(queue.enqueue(1) && queue.enqueue(2) && queue.enqueue(3))
        #expect(!queue.enqueue(4), "a full queue refuses (and counts) instead of growing")
        // Backoffs of 100, 200, 400, 400 ms (each ±50 %): a third attempt comes 150 ms after the
        // first at the earliest. Only bounds that hold on a loaded machine are checked (a busy
        // pool makes attempts later, never earlier).
        let start = ContinuousClock.now
        while attempts.value < 3 && ContinuousClock.now - start < .seconds(10) { try await Task.sleep(for: .milliseconds(10)) }
        #expect(attempts.value >= 3, "it keeps retrying")
        #expect(ContinuousClock.now - start >= .milliseconds(150), "with backoff, not in a loop")
        let reached = attempts.value
        try await Task.sleep(for: .seconds(1))
        #expect(attempts.value <= reached + 6, "at most one attempt per 200 ms once the backoff is capped: \(attempts.value - reached)")
        #expect(queue.count == 3, "each attempt is one batch of all three, none dropped")
    }
}

final class AttemptCounter: Sendable {
    private let count = Mutex(0)
    func increment() { count.withLock { $0 += 1 } }
    var value: Int { count.withLock { $0 } }
}
