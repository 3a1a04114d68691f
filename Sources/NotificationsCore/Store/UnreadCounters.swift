internal import Logging
internal import MongoStore
internal import Synchronization

/// The per-user unread counters (`user_counters`), kept exact although writes can end with
/// an unknown outcome.
///
/// A counter document is `{_id: user, unread, seq, stale, checkSeq, checkCount, checkAt}`.
/// Every write that changes a user's unread notifications is followed by
/// `$inc {unread: ±n, seq: 1}`. When a write's outcome is unknown (it timed out, or its
/// connection broke, and the server may apply it later) or the `$inc` itself failed, the
/// counter can no longer be trusted: it is marked `stale` in MongoDB (with `$inc seq`), in the
/// background until MongoDB answers (`RetryQueue`), and in this instance's memory meanwhile.
/// Every instance then serves a fresh count (a sorted query on the feed index) for that user
/// until the counter is reconciled.
///
/// Reconciling must neither lose nor double an `$inc` that races the recount, and a write's
/// `$inc` follows its commit by up to `WriteTiming.counterSettle` (the write's reply, then its
/// one counter update: the counters a multi-document `$inc` needs are made before the write).
/// So it takes two
/// steps: a reader records `(checkSeq, checkCount, checkAt)` guarded on the `seq` it read
/// before counting; a reader at least `settle` later, finding `seq` still equal to `checkSeq`,
/// sets `unread = checkCount` and clears `stale`, guarded on the same `seq` and `checkAt`.
/// Every write committed before the count had its `$inc` land before the `seq` was read (or
/// `seq` would have moved), and every later write moves `seq` and restarts the check.
///
/// A fan-out batch's `+1`s can come arbitrarily late (an owner frozen between its insert and its
/// `$inc`, woken after another instance resumed the batch and the counters were reconciled), so
/// no time bound covers them: they are made idempotent instead. Each batch has a marker; its
/// `$inc` applies only to counters that do not hold the marker yet, and pushes it (the last
/// `markerMemory` markers are kept per user); a resumed batch pushes the marker with its stale
/// mark. So the `+1` of a batch lands at most once per user, and never after its resume took
/// the count over.
final class UnreadCounters: Sendable {
    let counters: MongoCollection
    let notifications: MongoCollection
    /// How long `seq` must stay unchanged before a recount is trusted (`WriteTiming.counterSettle`).
    let settle: Duration
    private let logger: Logger
    private let locallyStale = StaleUsers()
    private let repairs: RetryQueue<String>

    /// - Parameter repaired: called once a user's counter is marked stale in MongoDB, so cached
    ///   counts are dropped (every instance then recounts).
    init(
        notifications: MongoCollection, counters: MongoCollection, settle: Duration, metrics: ServiceMetrics, logger: Logger,
        repaired: @escaping @Sendable (String) async -> Void
    ) {
        self.notifications = notifications
        self.counters = counters
        self.settle = settle
        self.logger = logger
        var policy = RetryQueue<String>.Policy()
        // Marked twice a second apart: a write the frozen server applies late lands before the second.
        policy.confirmations = 2
        policy.batchSize = 100
        // A mark must land soon after MongoDB answers (counts converge within the cache TTL),
        // and is worth keeping through a long outage.
        policy.backoffCap = .seconds(5)
        policy.giveUpAfter = .seconds(86_400)
        let locallyStale = self.locallyStale
        repairs = RetryQueue(.counterRepairs, policy: policy, metrics: metrics, logger: logger) { users in
            // A constant number of commands for the whole batch, never a statement per user.
            try await Self.markStaleNow(users, in: counters)
        } completed: { users in
            locallyStale.remove(users)
            for user in users { await repaired(user) }
        } dropped: { users in
            locallyStale.remove(users)
        }
    }

    /// Follows a committed write; when the `$inc` fails (its outcome unknown), the counter is marked stale.
    func adjust(_ user: String, by delta: Int) async {
        do {
            _ = try await counters.update(["_id": .string(user)], ["$inc": ["unread": .int64(Int64(delta)), "seq": .int64(1)]], upsert: true)
        } catch {
            logger.warning("Unread counter update failed; it will be recounted", metadata: ["user": "\(user)", "error": "\(error)"])
            markStale(user)
        }
    }

    /// How many fan-out batch markers a counter keeps (a batch's late `+1` is recognised while
    /// its user has had fewer than this many fan-out batches since).
    static let markerMemory = 64

    /// After a batch committed: +1 for each occurrence of a user, in a constant number of
    /// commands (one query and one insert for users without a counter yet, then one
    /// multi-document `$inc` per distinct number of notifications a user got in the batch,
    /// usually one), never a statement per user: the dev server runs statements one by one.
    /// One user alone without a marker is one upsert. With a fan-out batch's `marker`, only
    /// counters without it are incremented, and get it. A failure marks the users' counters
    /// stale instead.
    /// - Parameter ensured: the counters were created before the write (`ensureCounters`), so the
    ///   `$inc` is the only call after its commit.
    func incrementMany(_ users: [String], marker: String? = nil, ensured: Bool = false) async {
        var counts: [String: Int] = [:]
        for user in users { counts[user, default: 0] += 1 }
        if marker == nil, counts.count == 1, let (user, count) = counts.first {
            await adjust(user, by: count)
            return
        }
        guard !counts.isEmpty else { return }
        let usersByCount = Dictionary(grouping: counts.keys) { counts[$0] ?? 0 }
        do {
            if !ensured { try await ensureCounters(Array(counts.keys)) }
            _ = try await counters.update(usersByCount.sorted { $0.key < $1.key }.map { count, group in
                var filter: BSONDocument = ["_id": ["$in": .array(group.sorted().map(BSONValue.string))]]
                var update: BSONDocument = ["$inc": ["unread": .int64(Int64(count)), "seq": .int64(1)]]
                if let marker {
                    filter["marks"] = ["$ne": .string(marker)]
                    update["$push"] = Self.pushMarker(marker)
                }
                return MongoCollection.UpdateStatement(filter: filter, update: update, multi: true)
            })
        } catch {
            logger.warning("Unread counter updates of a batch failed; they will be recounted", metadata: ["users": "\(counts.count)", "error": "\(error)"])
            for user in counts.keys { markStale(user) }
        }
    }

    /// For a batch that was interrupted and is written again: which counters its first run
    /// incremented is unknown, so all of them are marked stale (recounted, then reconciled).
    /// With the batch's `marker`, the mark also takes the batch's `+1` over: the first run's
    /// `$inc`, should it still come, finds the marker and changes nothing.
    func markStaleMany(_ users: [String], marker: String? = nil) async {
        do {
            try await Self.markStaleNow(users, marker: marker, in: counters)
        } catch {
            for user in Set(users) { markStale(user) }
        }
    }

    private static func pushMarker(_ marker: String) -> BSONValue {
        ["marks": ["$each": .array([.string(marker)]), "$slice": .int32(Int32(-markerMemory))]]
    }

    /// Creates the counters missing among `users` (a multi-document update cannot upsert).
    /// - Parameter timeout: for each of its two calls, when shorter than the operation timeout.
    func ensureCounters(_ users: [String], within timeout: Duration? = nil) async throws(MongoError) {
        try await Self.ensureCounters(users, in: counters, within: timeout)
    }

    private static func ensureCounters(_ users: [String], in counters: MongoCollection, within timeout: Duration? = nil) async throws(MongoError) {
        let users = Array(Set(users)).sorted()
        let started = ContinuousClock.now
        let existing = try await counters.find(
            ["_id": ["$in": .array(users.map(BSONValue.string))]], sort: ["_id": 1], projection: ["_id": 1], timeout: timeout)
        let known = Set(existing.compactMap { $0["_id"]?.string })
        let missing = Set(users).subtracting(known)
        guard !missing.isEmpty else { return }
        // Duplicates (created meanwhile by another write) are reported, not thrown: fine.
        _ = try await counters.insert(
            missing.sorted().map { ["_id": .string($0), "unread": .int64(0), "seq": .int64(0)] },
            timeout: timeout.map { max(.milliseconds(1), $0 - (ContinuousClock.now - started)) })
    }

    /// A write for `user` may or may not have been applied: recount until reconciled.
    func markStale(_ user: String) {
        locallyStale.insert(user)
        repairs.enqueue(user)
    }

    /// The user's unread count: the counter, or a fresh count while the counter is stale.
    func count(_ user: String) async throws(MongoError) -> Int {
        let counter = try await counters.findOne(["_id": .string(user)])
        let stale = counter?["stale"]?.bool == true || locallyStale.contains(user)
        guard stale else { return max(0, Int(counter?["unread"]?.int64 ?? 0)) }
        let unread = try await notifications.find(
            ["recipientId": .string(user), "readAt": .null], sort: MongoNotificationStore.feedSort, projection: ["_id": 1]
        ).count
        if let counter, counter["stale"]?.bool == true { await reconcile(user, counter: counter, counted: unread) }
        return unread
    }

    /// Marks the users' counters stale (creating those missing), and with a batch's `marker` pushes
    /// it: one find, one insert, one update command, never a statement per user.
    private static func markStaleNow(_ users: [String], marker: String? = nil, in counters: MongoCollection) async throws(MongoError) {
        let users = Array(Set(users)).sorted()
        guard !users.isEmpty else { return }
        let ids: BSONValue = .array(users.map(BSONValue.string))
        var statements: [MongoCollection.UpdateStatement] = []
        if let marker {
            statements.append(.init(filter: ["_id": ["$in": ids], "marks": ["$ne": .string(marker)]], update: ["$push": pushMarker(marker)], multi: true))
        }
        statements.append(.init(filter: ["_id": ["$in": ids]], update: ["$set": ["stale": true], "$inc": ["seq": .int64(1)]], multi: true))
        try await ensureCounters(users, in: counters)
        _ = try await counters.update(statements)
    }

    /// One step of the two-step reconciliation (best effort: a failure leaves the counter stale).
    private func reconcile(_ user: String, counter: BSONDocument, counted: Int) async {
        let seq = counter["seq"]?.int64 ?? 0
        let now = SystemWallClock().now().milliseconds
        do {
            if counter["checkSeq"]?.int64 == seq, let checkedAt = counter["checkAt"]?.int64, let checked = counter["checkCount"]?.int64,
                now - checkedAt >= settle.milliseconds
            {
                let result = try await counters.update(
                    ["_id": .string(user), "seq": .int64(seq), "checkAt": .int64(checkedAt)],
                    ["$set": ["unread": .int64(checked), "stale": false]])
                if result.matched > 0 { logger.info("Unread counter reconciled", metadata: ["user": "\(user)", "unread": "\(checked)"]) }
            } else if counter["checkSeq"]?.int64 != seq {
                _ = try await counters.update(
                    ["_id": .string(user), "seq": .int64(seq)],
                    ["$set": ["checkSeq": .int64(seq), "checkCount": .int64(Int64(counted)), "checkAt": .int64(now)]])
            }
        } catch {
            logger.debug("Unread counter reconciliation deferred", metadata: ["user": "\(user)", "error": "\(error)"])
        }
    }
}

/// Users whose counter this instance marked stale and MongoDB has not confirmed yet, with how
/// many marks are pending for each (a user stays until the last one lands). Bounded: past the
/// bound, only the MongoDB mark, once it lands, triggers the recount.
final class StaleUsers: Sendable {
    private let users = Mutex<[String: Int]>([:])
    let capacity: Int

    init(capacity: Int = 100_000) {
        self.capacity = capacity
    }

    func insert(_ user: String) {
        users.withLock { users in
            if users[user] != nil || users.count < capacity { users[user, default: 0] += 1 }
        }
    }

    func remove(_ done: [String]) {
        users.withLock { users in
            for user in done {
                guard let pending = users[user] else { continue }
                users[user] = pending > 1 ? pending - 1 : nil
            }
        }
    }

    func contains(_ user: String) -> Bool { users.withLock { $0[user] != nil } }
    var count: Int { users.withLock { $0.count } }
}
