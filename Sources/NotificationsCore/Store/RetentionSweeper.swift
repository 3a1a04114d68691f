internal import Logging
internal import MongoStore
public import ServiceLifecycle

/// On every instance: removes notifications that expired, are older than
/// `FEED_RETENTION_DAYS`, or lie beyond a user's newest `FEED_MAX_PER_USER`, in batches.
///
/// Instances take turns through a lease in MongoDB (`leases`, `retention`), so two do not
/// fight over the same documents; the lease is renewed after every batch, and a pass stops
/// when it is lost. Correctness does not rest on the lease: each batch deletes by state class
/// and adjusts counts exactly, or has them recounted (`MongoNotificationStore.remove`).
public struct RetentionSweeper: Service {
    let store: MongoNotificationStore
    let feed: NotificationFeed
    let metrics: ServiceMetrics
    let lease: MongoLease
    let interval: Duration
    /// 0: kept for ever.
    let retentionDays: Int
    /// 0: no cap.
    let maxPerUser: Int
    let clock: any WallClock

    /// Notifications per batch: one query and a delete per state class, `$in` of at most this many ids.
    static let batchSize = 1000
    /// Batches per pass, so a pass (and the lease) stays short; the next pass goes on.
    static let batchesPerPass = 50

    public init(
        store: MongoNotificationStore, feed: NotificationFeed, metrics: ServiceMetrics, interval: Duration, retentionDays: Int, maxPerUser: Int,
        clock: any WallClock = SystemWallClock()
    ) {
        self.store = store
        self.feed = feed
        self.metrics = metrics
        self.interval = interval
        self.retentionDays = retentionDays
        self.maxPerUser = maxPerUser
        self.clock = clock
        // Long enough for a batch on a slow server; a holder that dies frees it this much later.
        lease = MongoLease(
            leases: store.pool.collection("leases"), name: "retention", duration: max(interval * 2, store.writeTimeout * 4), clock: clock)
    }

    public func run() async throws {
        await repeatUntilShutdown(every: interval, spread: 0.8...1.0) {
            do {
                _ = try await pass()
            } catch {
                store.logger.debug("Retention pass failed; retrying", metadata: ["error": "\(error)"])
            }
        }
    }

    /// One pass, if this instance gets the lease: how many it removed, by reason.
    func pass() async throws -> [ServiceMetrics.RemovalReason: Int] {
        let token = UserCounters.newToken()
        guard try await lease.acquire(token: token) else { return [:] }
        var removed: [ServiceMetrics.RemovalReason: Int] = [:]
        var budget = Self.batchesPerPass
        /// Removes batches from `next` until it has none, the pass's budget is spent, or the lease is lost.
        func drain(_ reason: ServiceMetrics.RemovalReason, _ next: () async throws(MongoError) -> [BSONDocument]) async throws -> Bool {
            while budget > 0 {
                let batch = try await next()
                guard !batch.isEmpty else { return true }
                budget -= 1
                let (count, users) = try await store.remove(batch)
                removed[reason, default: 0] += count
                metrics.notificationsRemoved(count, reason: reason)
                await feed.removed(from: Array(users))
                store.logger.info("Removed notifications", metadata: ["reason": "\(reason.rawValue)", "count": "\(count)", "users": "\(users.count)"])
                guard try await lease.renew(token: token) else { return false }
                if batch.count < Self.batchSize { return true }
            }
            return false
        }
        defer { Task { [lease] in try? await lease.release(token: token) } }
        let now = clock.now()
        guard try await drain(.expired, { () throws(MongoError) in try await store.expired(now: now, limit: Self.batchSize) }) else { return removed }
        if retentionDays > 0 {
            let oldest = now.advanced(by: .seconds(Int64(retentionDays) * 86_400) * -1)
            guard try await drain(.retention, { () throws(MongoError) in try await store.created(before: oldest, limit: Self.batchSize) }) else {
                return removed
            }
        }
        if maxPerUser > 0 {
            for user in try await store.usersPossiblyOver(cap: maxPerUser, limit: 100) {
                guard try await drain(.cap, { () throws(MongoError) in try await store.beyondCap(user: user, cap: maxPerUser, limit: Self.batchSize) })
                else { return removed }
            }
        }
        return removed
    }
}
