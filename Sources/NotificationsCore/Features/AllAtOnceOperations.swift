public import Logging
internal import MongoStore
internal import Resilience

/// `seen-all`, `read-all`, `archive-all`: under the user's distributed lock `bulk:{userId}`,
/// in batches of at most 1000 (`MongoNotificationStore.apply(_:batch:marker:at:)`).
///
/// When more than `BULK_SYNC_LIMIT` notifications would change, the request answers
/// `in_progress` with an operation id and the work goes on in the background, with its record
/// as its progress and lease (`LeasedJobs`, as event fan-outs): any instance resumes it once
/// its owner stops renewing. Each batch's range is fixed in the record before it is written;
/// an interrupted batch is run again over the same range, and its count is then read from
/// the notifications it marked, so `updated` is exact however often a batch runs.
/// Notifications created after the request are never touched (every range lies below the
/// request's time).
public struct AllAtOnceOperations: Resumable {
    public enum Answer: Sendable, Equatable {
        case done(updated: Int)
        case inProgress(operationId: String, updated: Int)
    }

    let store: MongoNotificationStore
    let operations: BulkOperationStore
    let runner: BackgroundRunner
    let locks: LockManager
    let cache: FeedCache
    let streams: StreamPublisher
    let syncLimit: Int
    public let lease: Duration
    let retention: Duration
    let clock: any WallClock
    let logger: Logger

    static let batchSize = 1000

    public init(
        store: MongoNotificationStore, operations: BulkOperationStore, runner: BackgroundRunner, locks: LockManager, cache: FeedCache,
        streams: StreamPublisher, settings: Settings, logger: Logger, clock: any WallClock = SystemWallClock()
    ) {
        self.store = store
        self.operations = operations
        self.runner = runner
        self.locks = locks
        self.cache = cache
        self.streams = streams
        self.syncLimit = settings.bulkSyncLimit
        self.lease = .milliseconds(settings.eventFanoutLeaseMilliseconds)
        self.retention = .seconds(settings.eventRetentionSeconds)
        self.clock = clock
        self.logger = logger
    }

    /// Applies `action` to the user's non-archived notifications (of `type`, created before
    /// `before`) created before now.
    public func apply(_ action: StateAction, userId: String, type: String? = nil, before: Timestamp? = nil) async throws -> Answer {
        let scope = AllAtOnceScope(recipientId: userId, action: action, type: type)
        let answer = try await locks.withLock("bulk:{\(userId)}") { [self] _ in
            let now = clock.now()
            var last = now
            if let before {
                // Nothing was created before the epoch (an id's time is never negative).
                guard before.milliseconds > 0 else { return Answer.done(updated: 0) }
                last = min(now, Timestamp(milliseconds: before.milliseconds - 1))
            }
            // Ids below the first of the next millisecond: everything created up to `last`.
            let upper = ObjectID.make(milliseconds: last.milliseconds + 1, tail: [0, 0, 0, 0, 0, 0])
            let operation = BulkOperation(
                id: ObjectIDs.new(at: now), scope: scope, status: "in_progress", updated: 0, batch: 0, cursor: upper, batchEnd: nil, time: now,
                leaseToken: LeasedJobs.newToken(), leaseUntil: now.advanced(by: lease), createdAt: now, expiresAt: now.advanced(by: retention))
            // The first batch (no larger than the limit), and from it whether more than the limit
            // are to change: one more query only when the limit is beyond a batch and the batch is full.
            let probe = min(syncLimit, Self.batchSize)
            let first = try await store.nextBatch(scope, below: upper, limit: probe)
            var background = first.lower != nil
            if background, syncLimit > Self.batchSize { background = try await store.exceeds(scope, below: upper, limit: syncLimit) }
            // It is the operation's first batch when it is a whole one, or all there is.
            let plan = first.lower == nil || probe == Self.batchSize ? first : nil
            guard background else {
                do {
                    guard case .completed(let updated) = try await run(operation, recorded: false, first: plan) else {
                        return Answer.done(updated: 0)
                    }
                    return Answer.done(updated: updated)
                } catch {
                    // Whatever was written before the failure is visible: drop the cached feed.
                    await changed(userId)
                    throw error
                }
            }
            try await operations.insert(operation)
            start(operation, first: plan)
            return Answer.inProgress(operationId: operation.id, updated: 0)
        }
        return answer
    }

    public func createIndexes() async throws {
        try await operations.createIndexes()
    }

    /// The user's operation; nil when unknown, another user's or past its retention.
    public func status(userId: String, operationId: String) async throws -> BulkOperation? {
        guard let operation = try await operations.find(id: operationId), operation.scope.recipientId == userId,
            operation.expiresAt > clock.now()
        else { return nil }
        return operation
    }

    /// Runs the operation's batches until it is complete, its lease is lost, or `stop()` is true.
    /// `recorded`: its record exists, and every step of its progress is fenced on the lease.
    /// `first`: its first batch, when just looked up.
    func run(_ start: BulkOperation, recorded: Bool, first: AllAtOnceBatch? = nil, stop: @Sendable () -> Bool = { false }) async throws
        -> BackgroundOutcome
    {
        var operation = start
        var planned = first
        let jobs = operations.jobs
        while true {
            if stop() { return .stopped(count: operation.updated) }
            let resumed = operation.batchEnd != nil
            // A batch run again keeps the range its first run fixed, and finds in it what is
            // still to change; a new one is fixed from the notifications (or was, by `apply`).
            let batch: AllAtOnceBatch
            if resumed {
                batch = try await store.batch(
                    operation.scope, from: operation.batchEnd.flatMap { $0 == .zero ? nil : $0 }, below: operation.cursor)
            } else if let planned {
                batch = planned
            } else {
                batch = try await store.nextBatch(operation.scope, below: operation.cursor, limit: Self.batchSize)
            }
            planned = nil
            let lower = batch.lower
            if recorded {
                guard try await jobs.startBatch(operation.lease, end: .objectID(lower ?? .zero), leaseUntil: clock.now().advanced(by: lease)) else {
                    return .leaseLost
                }
            }
            let changed = try await whileRenewing(every: lease / 3, { [operation, jobs, clock, lease] in
                guard recorded else { return false }
                return (try? await jobs.renew(operation.lease, until: clock.now().advanced(by: lease))) != false
            }) {
                try await store.apply(operation.scope, batch: batch, marker: operation.id, at: operation.time)
            }
            // A batch run again: what all its runs changed is what carries the operation's mark.
            let count = resumed ? try await store.marked(operation.scope, from: lower, below: operation.cursor, marker: operation.id) : changed
            if changed > 0 || resumed { await self.changed(operation.scope.recipientId) }
            let next = lower ?? .zero
            if recorded {
                guard try await jobs.finishBatch(operation.lease, cursor: .objectID(next), count: count, leaseUntil: clock.now().advanced(by: lease))
                else { return .leaseLost }
            }
            operation.updated += count
            operation.batch += 1
            operation.cursor = next
            operation.batchEnd = nil
            guard lower != nil else {
                if recorded {
                    guard try await jobs.complete(operation.lease, at: clock.now()) else { return .leaseLost }
                }
                return .completed(count: operation.updated)
            }
        }
    }

    /// After a batch changed states: cached feeds dropped, open streams told.
    private func changed(_ user: String) async {
        await cache.invalidate(user: user)
        await streams.countChanged(user: user)
    }

    func start(_ operation: BulkOperation, first: AllAtOnceBatch? = nil) {
        runner.start(key: operation.id) { [self] stop in try await run(operation, recorded: true, first: first, stop: stop) }
    }

    public func resumeAbandoned() async throws {
        try await mongoOperation {
            try await operations.jobs.takeOverAbandoned(clock: clock, lease: lease, limit: 5, stopping: { runner.isStopping }) { document in
                guard let taken = BulkOperationStore.operation(document) else { return }
                logger.notice("Resuming a bulk operation whose owner stopped", metadata: ["operation": "\(taken.id)", "batch": "\(taken.batch)"])
                start(taken)
            }
        }
    }

    public func stopRunning() { runner.stop() }
}

extension BulkOperation {
    /// `GET …/operations/{operationId}`: `{"operationId", "action", "status", "updated"}`.
    public func write(to json: inout JSONWriter) {
        json.object { object in
            object.string("operationId", id)
            object.string("action", actionName)
            object.string("status", status)
            object.integer("updated", updated)
        }
    }
}
