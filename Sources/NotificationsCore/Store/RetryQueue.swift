internal import DequeModule
internal import Logging
internal import Synchronization

/// Writes that must reach MongoDB eventually although the request that needed them could not
/// make them (MongoDB was frozen or gone): undoing a late insert, freeing an idempotency claim,
/// storing an idempotent response, marking an unread counter for a recount.
///
/// One bounded queue, drained by one worker that exists only while there is work: due items
/// go out in batches (one command per batch, never one per item), a failed batch waits with
/// exponential backoff and jitter (so a recovering MongoDB is not flooded by every instance
/// at once), and an item that needs `confirmations` is written that many times, a
/// `confirmationGap` apart (a frozen server that comes back may apply the original write after
/// our first undo). Items older than `giveUpAfter` are dropped, logged and handed to `dropped`. The queue's size is
/// the `background_writes_pending{queue}` gauge; refusals and drops count in
/// `background_writes_dropped_total{queue}`.
final class RetryQueue<Item: Sendable>: Sendable {
    struct Policy: Sendable {
        var capacity = 10_000
        var batchSize = 1000
        var confirmations = 1
        /// Lets the failed call's late effect land before the first attempt.
        var firstAttemptAfter = Duration.seconds(1)
        var confirmationGap = Duration.seconds(1)
        var backoffBase = Duration.seconds(1)
        var backoffCap = Duration.seconds(30)
        var giveUpAfter = Duration.seconds(600)
        /// Items due this soon after the first go out with it (items queued together stay together).
        var coalesce = Duration.milliseconds(100)
    }

    private struct Entry {
        var item: Item
        var confirmations: Int
        var due: ContinuousClock.Instant
        let since: ContinuousClock.Instant
    }

    private struct State {
        var entries: Deque<Entry> = []
        var working = false
        /// Taken by the worker and being written.
        var inFlight = 0
        /// Batches sent so far (tests check that a backlog goes out in few commands).
        var batches = 0
    }

    private let state = Mutex(State())
    private let queue: ServiceMetrics.BackgroundQueue
    private let policy: Policy
    private let metrics: ServiceMetrics
    private let logger: Logger
    private let perform: @Sendable ([Item]) async throws -> Void
    private let completed: @Sendable ([Item]) async -> Void
    private let dropped: @Sendable ([Item]) -> Void

    /// - Parameters:
    ///   - perform: writes one batch in one command; throwing retries the whole batch later.
    ///   - completed: called with the items that got all their confirmations.
    ///   - dropped: called with items given up (too old) or refused (queue full).
    init(
        _ queue: ServiceMetrics.BackgroundQueue, policy: Policy = Policy(), metrics: ServiceMetrics, logger: Logger,
        perform: @escaping @Sendable ([Item]) async throws -> Void, completed: @escaping @Sendable ([Item]) async -> Void = { _ in },
        dropped: @escaping @Sendable ([Item]) -> Void = { _ in }
    ) {
        self.queue = queue
        self.policy = policy
        self.metrics = metrics
        self.logger = logger
        self.perform = perform
        self.completed = completed
        self.dropped = dropped
    }

    /// Items not yet written all their confirmations (queued or being written).
    var count: Int { state.withLock { $0.entries.count + $0.inFlight } }
    var batchesSent: Int { state.withLock { $0.batches } }

    /// Queues `item`; false (logged and counted) when the queue is full.
    @discardableResult
    func enqueue(_ item: Item) -> Bool {
        let now = ContinuousClock.now
        let (accepted, startWorker) = state.withLock { state -> (Bool, Bool) in
            guard state.entries.count + state.inFlight < policy.capacity else { return (false, false) }
            state.entries.append(Entry(item: item, confirmations: 0, due: now + policy.firstAttemptAfter, since: now))
            publishSize(state)
            defer { state.working = true }
            return (true, !state.working)
        }
        guard accepted else {
            metrics.backgroundWriteDropped(queue)
            logger.error("Background write queue full; a write MongoDB missed is dropped", metadata: ["queue": "\(queue.rawValue)"])
            dropped([item])
            return false
        }
        if startWorker { Task.detached { [self] in await drain() } }
        return true
    }

    /// The worker: runs until the queue is empty.
    private func drain() async {
        var failures = 0
        while true {
            let now = ContinuousClock.now
            let (batch, wait, expired) = state.withLock { state in takeDue(&state, now: now) }
            if !expired.isEmpty {
                metrics.backgroundWriteDropped(queue, count: expired.count)
                logger.error("Background writes gave up after retrying", metadata: ["queue": "\(queue.rawValue)", "count": "\(expired.count)"])
                dropped(expired)
            }
            if batch.isEmpty {
                guard let wait else { break }
                try? await Task.sleep(for: wait)
                continue
            }
            do {
                try await perform(batch.map(\.item))
                failures = 0
                let done = state.withLock { state in settle(batch, in: &state, now: ContinuousClock.now) }
                if !done.isEmpty { await completed(done) }
            } catch {
                failures += 1
                let delay = backoff(failures)
                logger.debug("Background writes failed; retrying", metadata: ["queue": "\(queue.rawValue)", "error": "\(error)", "delay": "\(delay)"])
                state.withLock { state in
                    state.inFlight = 0
                    for entry in batch.reversed() {
                        var retry = entry
                        retry.confirmations = 0
                        retry.due = ContinuousClock.now + delay
                        state.entries.prepend(retry)
                    }
                    publishSize(state)
                }
            }
        }
    }

    /// Called under the lock, so concurrent updates of the gauge cannot land out of order.
    private func publishSize(_ state: State) {
        metrics.backgroundWritesPending(queue, state.entries.count + state.inFlight)
    }

    /// Removes expired entries and up to `batchSize` due ones; with nothing due, how long to
    /// wait for the next (nil: the queue is empty and the worker stops).
    private func takeDue(_ state: inout State, now: ContinuousClock.Instant) -> ([Entry], Duration?, [Item]) {
        let expired = state.entries.filter { now - $0.since > policy.giveUpAfter }.map(\.item)
        if !expired.isEmpty {
            state.entries.removeAll { now - $0.since > policy.giveUpAfter }
            publishSize(state)
        }
        guard let next = state.entries.map(\.due).min() else {
            state.working = false
            return ([], nil, expired)
        }
        guard next <= now else { return ([], next - now, expired) }
        var batch: [Entry] = []
        var rest = Deque<Entry>()
        for entry in state.entries {
            if entry.due <= now + policy.coalesce && batch.count < policy.batchSize { batch.append(entry) } else { rest.append(entry) }
        }
        state.entries = rest
        state.batches += 1
        state.inFlight = batch.count
        return (batch, nil, expired)
    }

    /// After a batch was written: items with all confirmations are done, the rest come back later.
    private func settle(_ batch: [Entry], in state: inout State, now: ContinuousClock.Instant) -> [Item] {
        state.inFlight = 0
        var done: [Item] = []
        for var entry in batch {
            entry.confirmations += 1
            if entry.confirmations >= policy.confirmations {
                done.append(entry.item)
            } else {
                entry.due = now + policy.confirmationGap
                state.entries.append(entry)
            }
        }
        publishSize(state)
        return done
    }

    /// Exponential from `backoffBase` to `backoffCap`, times a random factor in 0.5...1.5.
    private func backoff(_ failures: Int) -> Duration {
        let exponential = policy.backoffBase * (1 << min(failures - 1, 16))
        return min(exponential, policy.backoffCap) * Double.random(in: 0.5...1.5)
    }
}
