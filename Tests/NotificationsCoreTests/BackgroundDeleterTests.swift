import Logging
import Metrics
import MongoStore
import NIOPosix
@testable import NotificationsCore
import Synchronization
import Testing
import TestSupport

@Suite("Late writes are undone: one worker, batches, a bounded queue")
struct BackgroundDeleterTests {
    static let metrics = ServiceMetrics(factory: NOOPMetricsHandler.instance)

    @Test func lateWritesAreRemovedInBatchesAndOthersKept() async throws {
        try await withMongoPool { pool in
            let collection = pool.collection("notifications")
            // As if 50 timed-out inserts had been applied by the server after all.
            let late: [BSONDocument] = (0..<50).map { ["_id": .string("late-\($0)"), "recipientId": "u", "run": "r1"] }
            // The same id re-inserted by a later run (an idempotent retry) is not this run's to delete.
            _ = try await collection.insert(late + [["_id": "kept", "recipientId": "u"], ["_id": "retried", "recipientId": "u", "run": "r2"]])
            let removed = AttemptCounter()
            let deleter = BackgroundDeleter(collection: collection, metrics: Self.metrics, logger: Logger(label: "test")) { recipients in
                for _ in recipients { removed.increment() }
            }
            for document in late { deleter.deleteEventually(.init(id: document["_id"] ?? .null, run: "r1", recipient: "u")) }
            deleter.deleteEventually(.init(id: "retried", run: "r1", recipient: "u"))
            let deadline = ContinuousClock.now + .seconds(10)
            while deleter.queue.count > 0 && ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(try await collection.find(["recipientId": "u"]).compactMap { $0["_id"]?.string }.sorted() == ["kept", "retried"])
            #expect(removed.value == 51, "the recipients' counters are told once each deletion is confirmed")
            #expect(deleter.queue.batchesSent == 2, "one command per confirmation round, not one per document")
        }
    }

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
