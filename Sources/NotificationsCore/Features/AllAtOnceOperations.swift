public import Logging
internal import MongoStore
internal import Resilience

/// `seen-all`, `read-all`, `archive-all`: under the user's distributed lock `bulk:{userId}`,
/// in batches of at most 1000 (`MongoNotificationStore.applyRange`).
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
        let answer = try await locks.withLock("bulk:\(userId)") { [self] _ in
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
            // More than the limit to change: the (limit + 1)-th exists.
            guard try await store.batchEnd(scope, below: upper, limit: syncLimit + 1) != nil else {
                do {
                    guard case .completed(let updated) = try await run(operation, recorded: false) else { return Answer.done(updated: 0) }
                    return Answer.done(updated: updated)
                } catch {
                    // Whatever was written before the failure is visible: drop the cached feed.
                    await changed(userId)
                    throw error
                }
            }
            try await operations.insert(operation)
            start(operation)
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
    func run(_ start: BulkOperation, recorded: Bool, stop: @Sendable () -> Bool = { false }) async throws -> BackgroundOutcome {
        var operation = start
        let jobs = operations.jobs
        while true {
            if stop() { return .stopped(count: operation.updated) }
            let resumed = operation.batchEnd != nil
            let lower = try await resumed ? operation.batchEnd.flatMap { $0 == .zero ? nil : $0 } : store.batchEnd(
                operation.scope, below: operation.cursor, limit: Self.batchSize)
            if recorded {
                guard try await jobs.startBatch(operation.lease, end: .objectID(lower ?? .zero), leaseUntil: clock.now().advanced(by: lease)) else {
                    return .leaseLost
                }
            }
            let changed = try await whileRenewing(every: lease / 3, { [operation, jobs, clock, lease] in
                guard recorded else { return false }
                return (try? await jobs.renew(operation.lease, until: clock.now().advanced(by: lease))) != false
            }) {
                try await store.applyRange(operation.scope, from: lower, below: operation.cursor, marker: operation.id, at: operation.time)
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

    func start(_ operation: BulkOperation) {
        runner.start(key: operation.id) { [self] stop in try await run(operation, recorded: true, stop: stop) }
    }

    public func resumeAbandoned() async throws {
        for document in try await mongoOperation({ try await operations.jobs.abandoned(now: clock.now(), limit: 5) }) {
            guard !runner.isStopping, let operation = BulkOperationStore.operation(document) else { continue }
            let takenAt = clock.now()
            let taken = try await mongoOperation {
                try await operations.jobs.takeOver(operation.lease, now: takenAt, token: LeasedJobs.newToken(), leaseUntil: takenAt.advanced(by: lease))
            }
            if let taken = taken.flatMap(BulkOperationStore.operation) {
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
