internal import Synchronization

/// Group commit: items submitted while a write is in flight wait, and the next write takes
/// all of them at once (up to `maxBatch` in total `weight`; an item heavier than that goes
/// alone). A lone item is written at once, so an idle service adds no latency; under load, one
/// write serves many requests.
///
/// Each submitter gets its own answer (`write` answers per item, in order) within its own
/// `budget` from submission: a write is given the least time any of its items has left, and
/// an item whose time ran out while it waited is answered `expired()` without being written.
/// So waiting behind a slow write never stretches a request past its deadline.
///
/// A write has two phases: `write` (the serialized one: one at a time, in order) and `after`
/// (side effects that must precede the answers, such as cache invalidation and publishing).
/// The next write starts as soon as `write` returns, while `after` runs: a slow `after` (a
/// hung Redis, before its breaker opens) delays only its own submitters' answers, never the
/// writes queued behind it.
///
/// Every write runs in a detached task: it serves many submitters, so it must not inherit the
/// task-locals of whichever submitter happened to start it (a request's Redis scope, which
/// once failed would make every later write skip Redis; its request id in every log line).
/// Cancellation:
/// an item still waiting is dropped (nothing was written for it); an item already in a write
/// waits for that write, unless every item of the write was cancelled (a shutdown cutting
/// requests off), in which case the write itself is cancelled, as a lone request's would be.
final class GroupCommit<Item: Sendable, Answer: Sendable>: Sendable {
    /// Writes the items within the given time; answers each, in order.
    typealias Write = @Sendable ([Item], Duration) async -> [Result<Answer, any Error>]
    /// What follows a write before its submitters are answered, outside the serialized part.
    typealias After = @Sendable ([Item], [Result<Answer, any Error>]) async -> Void

    private struct Waiter: Sendable {
        let id: UInt64
        let item: Item
        let submitted: ContinuousClock.Instant
        let continuation: CheckedContinuation<Answer, any Error>
    }

    private struct State: Sendable {
        var nextID: UInt64 = 0
        var queued: [Waiter] = []
        var writing = false
        /// The write in flight, its submitters, and those of them whose task was cancelled.
        var batchTask: Task<Void, Never>?
        var inFlight: Set<UInt64> = []
        var cancelledInFlight: Set<UInt64> = []
        /// Submitted but not queued yet, and those of them already cancelled (the cancellation
        /// handler can run before the item is queued).
        var registering: Set<UInt64> = []
        var cancelledEarly: Set<UInt64> = []
    }

    private let state = Mutex(State())
    private let maxBatch: Int
    private let weight: @Sendable (Item) -> Int
    private let budget: Duration
    private let write: Write
    private let after: After
    /// What a submitter cancelled before its item was written gets.
    private let cancelled: @Sendable () -> any Error
    /// What a submitter whose budget ran out before its item was written gets.
    private let expired: @Sendable () -> any Error

    init(
        maxBatch: Int, budget: Duration, weight: @escaping @Sendable (Item) -> Int = { _ in 1 }, cancelled: @escaping @Sendable () -> any Error,
        expired: @escaping @Sendable () -> any Error, write: @escaping Write, after: @escaping After = { _, _ in }
    ) {
        precondition(maxBatch > 0)
        self.maxBatch = maxBatch
        self.weight = weight
        self.budget = budget
        self.cancelled = cancelled
        self.expired = expired
        self.write = write
        self.after = after
    }

    func submit(_ item: Item) async throws -> Answer {
        let id = state.withLock { state in
            defer { state.nextID += 1 }
            state.registering.insert(state.nextID)
            return state.nextID
        }
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Answer, any Error>) in
                let start = state.withLock { state -> Bool? in
                    state.registering.remove(id)
                    if state.cancelledEarly.remove(id) != nil { return nil }
                    state.queued.append(Waiter(id: id, item: item, submitted: .now, continuation: continuation))
                    guard !state.writing else { return false }
                    state.writing = true
                    return true
                }
                switch start {
                case nil: continuation.resume(throwing: cancelled())
                case true?: startNextBatch()
                case false?: break
                }
            }
        } onCancel: {
            cancel(id)
        }
    }

    /// Takes up to `maxBatch` waiting items into a write of their own (a task, so the
    /// submitters' own tasks only wait for their answers).
    private func startNextBatch() {
        let now = ContinuousClock.now
        let outOfTime: [Waiter] = state.withLock { state in
            // Whoever ran out of time waiting is answered now, unwritten.
            let outOfTime = state.queued.filter { now - $0.submitted >= budget }
            state.queued.removeAll { now - $0.submitted >= budget }
            guard !state.queued.isEmpty else {
                state.writing = false
                return outOfTime
            }
            // In order of arrival, while the total weight allows; the first always goes.
            var taken = 0
            var total = 0
            for waiter in state.queued {
                let next = weight(waiter.item)
                if taken > 0 && total + next > maxBatch { break }
                total += next
                taken += 1
            }
            let batch = Array(state.queued.prefix(taken))
            state.queued.removeFirst(batch.count)
            state.inFlight = Set(batch.map(\.id))
            state.cancelledInFlight = []
            let remaining = batch.map { budget - (now - $0.submitted) }.min() ?? budget
            state.batchTask = Task.detached { [self] in
                let items = batch.map(\.item)
                let answers = await write(items, remaining)
                // The next write may start now; this one's side effects go on beside it.
                finishBatch()
                await after(items, answers)
                for (index, waiter) in batch.enumerated() {
                    waiter.continuation.resume(with: index < answers.count ? answers[index] : .failure(cancelled()))
                }
            }
            return outOfTime
        }
        for waiter in outOfTime { waiter.continuation.resume(throwing: expired()) }
    }

    private func finishBatch() {
        state.withLock { state in
            state.batchTask = nil
            state.inFlight = []
            state.cancelledInFlight = []
        }
        startNextBatch()
    }

    /// Items waiting for the next write (tests).
    var queuedCount: Int { state.withLock { $0.queued.count } }

    private func cancel(_ id: UInt64) {
        let dropped: Waiter? = state.withLock { state in
            if let index = state.queued.firstIndex(where: { $0.id == id }) {
                return state.queued.remove(at: index)
            }
            if state.inFlight.contains(id) {
                state.cancelledInFlight.insert(id)
                if state.cancelledInFlight == state.inFlight { state.batchTask?.cancel() }
            } else if state.registering.contains(id) {
                state.cancelledEarly.insert(id)
            }
            // Otherwise it has its answer already.
            return nil
        }
        dropped?.continuation.resume(throwing: cancelled())
    }
}
