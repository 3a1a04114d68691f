@testable import NotificationsCore
import Synchronization
import Testing

/// Group commit as pure logic: a fake write that records its batches and can be held open.
@Suite("Group commit: batching, per-item answers, cancellation")
struct GroupCommitTests {
    struct Cancelled: Error, Equatable {}
    struct Refused: Error, Equatable { let item: Int }

    /// A write that records each batch, answers each item on its own (odd numbers fail), and
    /// waits while `held` is set.
    final class FakeWriter: Sendable {
        let batches = Mutex<[[Int]]>([])
        let held = Mutex(false)

        func write(_ items: [Int]) async -> [Result<Int, any Error>] {
            batches.withLock { $0.append(items) }
            while held.withLock({ $0 }) {
                if Task.isCancelled { return items.map { _ in .failure(Cancelled()) } }
                try? await Task.sleep(for: .milliseconds(5))
            }
            return items.map { $0 % 2 == 1 ? .failure(Refused(item: $0)) : .success($0 * 10) }
        }

        var recorded: [[Int]] { batches.withLock { $0 } }
    }

    struct Expired: Error, Equatable {}

    func commit(
        _ writer: FakeWriter, maxBatch: Int = 1000, budget: Duration = .seconds(30), weight: @escaping @Sendable (Int) -> Int = { _ in 1 }
    ) -> GroupCommit<Int, Int> {
        GroupCommit(maxBatch: maxBatch, budget: budget, weight: weight, cancelled: { Cancelled() }, expired: { Expired() }) { items, _ in
            await writer.write(items)
        }
    }

    func waitUntil(_ condition: () -> Bool) async throws {
        for _ in 0..<400 where !condition() { try await Task.sleep(for: .milliseconds(5)) }
        #expect(condition())
    }

    @Test func aLoneItemIsWrittenAtOnceAndEachSubmitterGetsItsOwnAnswer() async throws {
        let writer = FakeWriter()
        let commit = commit(writer)
        #expect(try await commit.submit(2) == 20)
        await #expect(throws: Refused(item: 3)) { try await commit.submit(3) }
        #expect(writer.recorded == [[2], [3]])
    }

    @Test func itemsArrivingDuringAWriteGoTogetherInTheNextOne() async throws {
        let writer = FakeWriter()
        let commit = commit(writer, maxBatch: 4)
        writer.held.withLock { $0 = true }
        try await withThrowingTaskGroup(of: (Int, Result<Int, Refused>).self) { group in
            group.addTask { (0, .success(try await commit.submit(0))) }
            try await waitUntil { writer.recorded.count == 1 }
            for item in 1...6 {
                group.addTask {
                    do { return (item, .success(try await commit.submit(item))) } catch let error as Refused { return (item, .failure(error)) }
                }
            }
            try await Task.sleep(for: .milliseconds(100))
            writer.held.withLock { $0 = false }
            var answers: [Int: Result<Int, Refused>] = [:]
            for try await (item, answer) in group { answers[item] = answer }
            for item in 0...6 {
                #expect(answers[item] == (item % 2 == 1 ? .failure(Refused(item: item)) : .success(item * 10)), "item \(item)")
            }
        }
        // The first write took the lone item; the six that came meanwhile went in two writes of at most four.
        let batches = writer.recorded
        #expect(batches.first == [0])
        #expect(batches.dropFirst().map(\.count) == [4, 2], "\(batches)")
        #expect(Set(batches.dropFirst().flatMap { $0 }) == Set(1...6))
    }

    /// Fan-out batches share the writer with single creates: the bound is in documents.
    @Test func aWriteTakesWaitingItemsUpToItsWeightAndAHeavyItemGoesAlone() async throws {
        let writer = FakeWriter()
        // An item's weight is its value: 0 stands for a single create of weight 1.
        let commit = commit(writer, maxBatch: 10, weight: { max(1, $0) })
        writer.held.withLock { $0 = true }
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { _ = try? await commit.submit(0) }
            try await waitUntil { writer.recorded.count == 1 }
            // One at a time, so they queue in this order.
            for (index, item) in [4, 0, 6, 12, 0].enumerated() {
                group.addTask { _ = try? await commit.submit(item) }
                try await waitUntil { commit.queuedCount == index + 1 }
            }
            writer.held.withLock { $0 = false }
            try await group.waitForAll()
        }
        // In order of arrival: 4+1 (the 6 would pass 10), 6, the 12 alone (heavier than a whole write), 0.
        #expect(writer.recorded == [[0], [4, 0], [6], [12], [0]], "\(writer.recorded)")
    }

    @Test func aCancelledWaitingItemIsNeverWritten() async throws {
        let writer = FakeWriter()
        let commit = commit(writer)
        writer.held.withLock { $0 = true }
        let first = Task { try await commit.submit(0) }
        try await waitUntil { writer.recorded.count == 1 }
        let waiting = Task { try await commit.submit(2) }
        try await Task.sleep(for: .milliseconds(50))
        waiting.cancel()
        await #expect(throws: Cancelled()) { try await waiting.value }
        writer.held.withLock { $0 = false }
        #expect(try await first.value == 0)
        #expect(writer.recorded == [[0]], "the cancelled item was not written")
    }

    /// Waiting behind a slow write never stretches a request past its budget: it is answered
    /// unwritten once its time is up, and the write gets no more time than its items have left.
    @Test func anItemWhoseBudgetRanOutWhileWaitingIsNotWritten() async throws {
        let writer = FakeWriter()
        let commit = commit(writer, budget: .milliseconds(200))
        writer.held.withLock { $0 = true }
        let first = Task { try await commit.submit(0) }
        try await waitUntil { writer.recorded.count == 1 }
        let late = Task { try await commit.submit(2) }
        try await Task.sleep(for: .milliseconds(300))
        writer.held.withLock { $0 = false }
        #expect(try await first.value == 0)
        await #expect(throws: Expired()) { try await late.value }
        #expect(writer.recorded == [[0]])
    }

    @Test func aWriteWhoseSubmittersAllGaveUpIsCancelled() async throws {
        let writer = FakeWriter()
        let commit = commit(writer)
        writer.held.withLock { $0 = true }
        let submitter = Task { try await commit.submit(4) }
        try await waitUntil { writer.recorded.count == 1 }
        submitter.cancel()
        // The held write notices its cancellation and answers at once, though still "held".
        await #expect(throws: Cancelled()) { try await submitter.value }
        writer.held.withLock { $0 = false }
        #expect(try await commit.submit(6) == 60, "the next write runs")
    }

    @TaskLocal static var submitter: String?

    /// Writes serve many submitters: neither phase sees the task-locals of whoever started it
    /// (in the service, a request's Redis scope: once it had failed, every publish of a chain of
    /// writes started one from another was skipped). Before the fix the write task inherited them.
    @Test func writesDoNotInheritTheTaskLocalsOfTheirSubmitters() async throws {
        let seen = Mutex<[String?]>([])
        let commit = GroupCommit<Int, Int>(maxBatch: 10, budget: .seconds(30), cancelled: { Cancelled() }, expired: { Expired() }) { items, _ in
            seen.withLock { $0.append(Self.submitter) }
            try? await Task.sleep(for: .milliseconds(20))
            return items.map { .success($0) }
        } after: { _, _ in
            seen.withLock { $0.append(Self.submitter) }
        }
        try await withThrowingTaskGroup(of: Int.self) { group in
            for index in 0..<20 {
                group.addTask { try await Self.$submitter.withValue("request-\(index)") { try await commit.submit(index) } }
            }
            try await group.waitForAll()
        }
        let values = seen.withLock { $0 }
        #expect(!values.isEmpty && values.allSatisfy { $0 == nil }, "\(values)")
    }

    /// The next write starts while the previous one's `after` phase still runs.
    @Test func theNextWriteDoesNotWaitForThePreviousOnesAfterPhase() async throws {
        let afterRunning = Mutex(false)
        let overlapped = Mutex(false)
        let commit = GroupCommit<Int, Int>(maxBatch: 1, budget: .seconds(30), cancelled: { Cancelled() }, expired: { Expired() }) { items, _ in
            if afterRunning.withLock({ $0 }) { overlapped.withLock { $0 = true } }
            return items.map { .success($0) }
        } after: { items, _ in
            guard items == [0] else { return }
            afterRunning.withLock { $0 = true }
            try? await Task.sleep(for: .milliseconds(300))
            afterRunning.withLock { $0 = false }
        }
        async let first = commit.submit(0)
        try await Task.sleep(for: .milliseconds(50))
        let second = try await commit.submit(1)
        #expect(second == 1)
        #expect(overlapped.withLock { $0 }, "the second write went to the store while the first's after phase ran")
        #expect(try await first == 0)
    }
}
