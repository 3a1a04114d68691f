internal import Logging
internal import MongoStore
internal import Synchronization

/// The per-user counters (`user_counters`: unread, unseen and total over the non-archived
/// notifications, and archived; `Counts`), kept exact although writes can end with an unknown
/// outcome, and although the instance that made one can die before it is repaired.
///
/// A counter document is `{_id: user, unread, unseen, total, archived, seq, stale, checkSeq,
/// checkCounts, checkAt, pending, inflight, marks}`. Every write that changes a user's counts is
/// announced on the counter before it is sent (`pending.<token>`, `CounterAnnouncements`), and
/// settled after it: `$inc` of its change and `seq` retiring the announcement, in one update that
/// applies only while the announcement is there. What a write owes its counters is thereby a
/// fact in MongoDB from before the write, not a promise in the writer's memory: an
/// announcement that was not settled (the write or its settle timed out, failed, or the
/// instance died) is resolved by this instance at once while it lives, and otherwise by any
/// instance's sweep once it is older than `WriteTiming.counterSettle` (the longest a live
/// writer takes from announcing to settling). Resolving deletes what an unsettled create may
/// have inserted (its documents carry the token as `run`; its client got a 503 or no answer),
/// and marks the counter `stale` (with `$inc seq`) twice, a confirmation gap apart, before the
/// announcement is retired. Every instance serves a fresh count (a sorted query on the feed
/// index) for a stale counter, or one with an old announcement, until it is reconciled.
///
/// Reconciling must neither lose nor double an `$inc` that races the recount, and a write's
/// `$inc` follows its commit by up to `WriteTiming.counterSettle`. So it takes two steps: a
/// reader records `(checkSeq, checkCounts, checkAt)` guarded on the `seq` it read before
/// counting; a reader at least `settle` later, finding `seq` still equal to `checkSeq`, sets
/// the counts to `checkCounts` and clears `stale`, guarded on the same `seq` and `checkAt`. Every
/// write committed before the count had its `$inc` land before the `seq` was read (or `seq`
/// would have moved), and every later write moves `seq` and restarts the check.
///
/// A fan-out batch's `+1`s can come arbitrarily late (an owner frozen between its insert and its
/// `$inc`, woken after another instance resumed the batch and the counters were reconciled), so
/// no time bound covers them: they are made idempotent instead. Each batch has a marker; its
/// `$inc` applies only to counters that do not hold the marker yet, and pushes it (the last
/// `markerMemory` markers are kept per user); a resumed batch pushes the marker with its stale
/// mark. So the `+1` of a batch lands at most once per user, and never after its resume took
/// the count over. (Fan-out batches need no announcement: the event's record in MongoDB owes
/// the batch until it is finished, and a resumed batch recounts every candidate.)
final class UserCounters: Sendable {
    let counters: MongoCollection
    let notifications: MongoCollection
    let timing: WriteTiming
    /// How long `seq` must stay unchanged before a recount is trusted (`WriteTiming.counterSettle`).
    var settle: Duration { timing.counterSettle }
    let logger: Logger
    let locallyStale = StaleUsers()
    /// This instance's unsettled announcements, resolved as soon as MongoDB answers: creates
    /// (`late_inserts`, whose documents are deleted) and other writes (`counter_repairs`).
    private let lateInserts: RetryQueue<PendingWrite>
    private let repairs: RetryQueue<PendingWrite>
    /// Called once a user's counter was marked stale in MongoDB, so cached counts are dropped.
    let repaired: @Sendable ([String]) async -> Void

    /// - Parameter repaired: called once users' counters are marked stale in MongoDB, so cached
    ///   counts are dropped (every instance then recounts).
    init(
        notifications: MongoCollection, counters: MongoCollection, timing: WriteTiming, metrics: ServiceMetrics, logger: Logger,
        repaired: @escaping @Sendable ([String]) async -> Void
    ) {
        self.notifications = notifications
        self.counters = counters
        self.timing = timing
        self.logger = logger
        self.repaired = repaired
        var policy = RetryQueue<PendingWrite>.Policy()
        // Marked twice, a confirmation gap apart: a write the frozen server applies late lands before the second.
        policy.confirmations = 2
        policy.confirmationGap = WriteTiming.confirmationGap
        policy.batchSize = 100
        // A mark must land soon after MongoDB answers (counts converge within the cache TTL);
        // past `giveUpAfter`, the sweep of any instance resolves the announcement.
        policy.backoffCap = .seconds(5)
        policy.giveUpAfter = .seconds(3600)
        let locallyStale = self.locallyStale
        let resolve: @Sendable ([PendingWrite]) async throws -> Void = { writes in
            try await Self.resolve(writes, counters: counters, notifications: notifications, now: SystemWallClock().now())
        }
        let completed: @Sendable ([PendingWrite]) async -> Void = { writes in
            locallyStale.remove(writes.map(\.user))
            await repaired(Array(Set(writes.map(\.user))))
        }
        let dropped: @Sendable ([PendingWrite]) -> Void = { writes in locallyStale.remove(writes.map(\.user)) }
        lateInserts = RetryQueue(.lateInserts, policy: policy, metrics: metrics, logger: logger, perform: resolve, completed: completed, dropped: dropped)
        repairs = RetryQueue(.counterRepairs, policy: policy, metrics: metrics, logger: logger, perform: resolve, completed: completed, dropped: dropped)
    }

    /// A write announced on these users' counters may or may not have been applied (or its
    /// settle did not land): this instance recounts them at once, and resolves the
    /// announcement in the background as soon as MongoDB answers (see `resolve`).
    func owe(_ users: [String], token: String, inserts: Bool) {
        for user in Set(users) {
            locallyStale.insert(user)
            let write = PendingWrite(user: user, token: token, inserts: inserts)
            if inserts { lateInserts.enqueue(write) } else { repairs.enqueue(write) }
        }
    }

    /// Announcements this instance still has to resolve (tests).
    var owed: Int { lateInserts.count + repairs.count }
    var lateInsertBatches: Int { lateInserts.batchesSent }

    /// How many fan-out batch markers a counter keeps (a batch's late `+1` is recognised while
    /// its user has had fewer than this many fan-out batches since).
    static let markerMemory = 64

    /// After a fan-out batch committed: +1 for each occurrence of a user, in a constant number of
    /// commands (one query and one insert for users without a counter yet, then one
    /// multi-document `$inc` per distinct number of notifications a user got in the batch,
    /// usually one), never a statement per user: the dev server runs statements one by one.
    /// Only counters without the batch's `marker` are incremented, and get it. A failure is
    /// thrown: the batch is then resumed, and its resume recounts its candidates.
    /// - Parameter ensured: the counters were created before the write (`ensureCounters`), so the
    ///   `$inc` is the only call after its commit.
    func incrementMany(_ users: [String], marker: String, ensured: Bool = false) async throws(MongoError) {
        var counts: [String: Int] = [:]
        for user in users { counts[user, default: 0] += 1 }
        guard !counts.isEmpty else { return }
        let usersByCount = Dictionary(grouping: counts.keys) { counts[$0] ?? 0 }
        if !ensured { try await ensureCounters(Array(counts.keys)) }
        _ = try await counters.update(usersByCount.sorted { $0.key < $1.key }.map { count, group in
            var increments = Counts.created(count).increments
            increments["seq"] = .int64(1)
            return MongoCollection.UpdateStatement(
                filter: ["_id": ["$in": .array(group.sorted().map(BSONValue.string))], "marks": ["$ne": .string(marker)]],
                update: ["$inc": .document(increments), "$push": Self.pushMarker(marker)], multi: true)
        })
    }

    /// For a batch that was interrupted and is written again: which counters its first run
    /// incremented is unknown, so all of them are marked stale (recounted, then reconciled).
    /// With the batch's `marker`, the mark also takes the batch's `+1` over: the first run's
    /// `$inc`, should it still come, finds the marker and changes nothing.
    func markStaleMany(_ users: [String], marker: String? = nil) async throws(MongoError) {
        try await Self.markStaleNow(users, marker: marker, in: counters)
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
            missing.sorted().map { user in
                var counter: BSONDocument = ["_id": .string(user)]
                for (field, value) in Counts().document.fields { counter[field] = value }
                counter["seq"] = .int64(0)
                return counter
            },
            timeout: timeout.map { max(.milliseconds(1), $0 - (ContinuousClock.now - started)) })
    }

    /// The user's counts: the counter, or a fresh count while the counter is stale (or holds an
    /// announcement older than `settle`, or predates the seen/archived counts).
    func counts(_ user: String) async throws(MongoError) -> Counts {
        try await counts(user, counter: try await counters.findOne(["_id": .string(user)]))
    }

    /// The counts of many users in one query (a counter that is not trusted is recounted on its own).
    func counts(_ users: [String]) async throws(MongoError) -> [String: Counts] {
        let found = try await counters.find(["_id": ["$in": .array(users.map { .string($0) })]])
        var counterOf: [String: BSONDocument] = [:]
        for counter in found { if let user = counter["_id"]?.string { counterOf[user] = counter } }
        var answers: [String: Counts] = [:]
        for user in users { answers[user] = try await counts(user, counter: counterOf[user]) }
        return answers
    }

    /// `counter` (the user's stored counter, nil if none) when it can be trusted, else a recount.
    private func counts(_ user: String, counter: BSONDocument?) async throws(MongoError) -> Counts {
        let reconciling = counter?["stale"]?.bool == true || Self.predatesCounts(counter)
        let stale = reconciling || locallyStale.contains(user)
            || !Self.abandoned(in: counter, user: user, before: SystemWallClock().now().advanced(by: .zero - settle)).isEmpty
        guard stale else { return Counts(document: counter) }
        let counted = try await recount(user)
        if let counter, reconciling { await reconcile(user, counter: counter, counted: counted) }
        return counted
    }

    /// A counter from before seen and archived were counted: it has `unread` only.
    static func predatesCounts(_ counter: BSONDocument?) -> Bool {
        counter?["unread"] != nil && counter?["total"] == nil
    }

    /// The counts from the stored notifications themselves: one sorted query on the feed index
    /// for the user's state fields (only while a counter is not trusted).
    func recount(_ user: String) async throws(MongoError) -> Counts {
        let found = try await notifications.find(
            ["recipientId": .string(user)], sort: MongoNotificationStore.feedSort, projection: ["_id": 0, "readAt": 1, "seenAt": 1, "archivedAt": 1])
        return found.reduce(into: Counts()) { $0 += Counts.of(document: $1) }
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
    private func reconcile(_ user: String, counter: BSONDocument, counted: Counts) async {
        let seq = counter["seq"]?.int64 ?? 0
        let now = SystemWallClock().now().milliseconds
        do {
            if counter["checkSeq"]?.int64 == seq, let checkedAt = counter["checkAt"]?.int64, let checked = counter["checkCounts"]?.document,
                now - checkedAt >= settle.milliseconds
            {
                var values = Counts(document: checked).document
                values["stale"] = false
                let result = try await counters.update(
                    ["_id": .string(user), "seq": .int64(seq), "checkAt": .int64(checkedAt)], ["$set": .document(values)])
                if result.matched > 0 { logger.info("User counter reconciled", metadata: ["user": "\(user)", "counts": "\(Counts(document: checked))"]) }
            } else if counter["checkSeq"]?.int64 != seq {
                _ = try await counters.update(
                    ["_id": .string(user), "seq": .int64(seq)],
                    ["$set": ["checkSeq": .int64(seq), "checkCounts": .document(counted.document), "checkAt": .int64(now)]])
            }
        } catch {
            logger.debug("User counter reconciliation deferred", metadata: ["user": "\(user)", "error": "\(error)"])
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
