internal import Logging
internal import MongoStore

/// A write that changes unread counts, as announced on one user's counter before it was sent.
struct PendingWrite: Sendable, Hashable {
    var user: String
    /// The write's token: the announcement's key, and the `run` of the notifications it inserts.
    var token: String
    /// It inserts notifications: unless it is settled, they are deleted (their client got a 503).
    var inserts: Bool
}

/// Announcements: what a write owes its counters, stored on them before the write is sent
/// (see `UserCounters`). An announcement is `pending.<token>: {at, ins, resolvedAt?}`, and
/// `inflight` counts a counter's announcements, so the sweep finds them through an index
/// without reading every counter.
extension UserCounters {
    /// Records the write `token` on each user's counter (creating missing counters), before
    /// the write is sent. When this throws, the write must not be sent; the announcement may
    /// still land (its outcome unknown), and is then resolved like any other (`owe`).
    /// One update command in the steady state; with new users, one find and one insert more.
    /// - Parameter timeout: for the whole, when shorter than the operation timeout.
    func announce(_ users: [String], token: String, inserts: Bool, within timeout: Duration? = nil) async throws(MongoError) {
        let users = Array(Set(users)).sorted()
        guard !users.isEmpty else { return }
        let started = ContinuousClock.now
        func left() -> Duration? { timeout.map { max(.milliseconds(1), $0 - (ContinuousClock.now - started)) } }
        let field = Self.announcementField(token)
        let entry: BSONDocument = ["at": .datetime(SystemWallClock().now().milliseconds), "ins": .bool(inserts)]
        var record = BSONDocument()
        record["$set"] = .document(BSONDocument([(field, .document(entry))]))
        record["$inc"] = ["inflight": .int64(1)]
        func absent(_ ids: [String]) -> BSONDocument {
            var filter: BSONDocument = ["_id": ids.count == 1 ? .string(ids[0]) : ["$in": .array(ids.map(BSONValue.string))]]
            filter[field] = ["$exists": false]
            return filter
        }
        if users.count == 1 {
            _ = try await counters.update(absent(users), record, upsert: true, timeout: timeout)
            return
        }
        // A multi-document update cannot upsert: counters missing are inserted with the announcement.
        let result = try await counters.update(absent(users), record, multi: true, timeout: timeout)
        guard result.matched < users.count else { return }
        let existing = try await counters.find(
            ["_id": ["$in": .array(users.map(BSONValue.string))]], sort: ["_id": 1], projection: ["_id": 1], timeout: left())
        let missing = Set(users).subtracting(existing.compactMap { $0["_id"]?.string }).sorted()
        guard !missing.isEmpty else { return }
        let inserted = try await counters.insert(
            missing.map { user in
                var counter: BSONDocument = ["_id": .string(user)]
                for (field, value) in Counts().document.fields { counter[field] = value }
                counter["seq"] = .int64(0)
                counter["inflight"] = .int64(1)
                counter["pending"] = .document(BSONDocument([(token, .document(entry))]))
                return counter
            }, timeout: left())
        // Made meanwhile by another write, without this announcement: announce on them too.
        let raced = inserted.duplicateIndexes.map { missing[$0] }
        if !raced.isEmpty { _ = try await counters.update(absent(raced), record, multi: true, timeout: left()) }
    }

    /// After the write: applies each user's change and retires the announcement, in one
    /// command (one statement per distinct change), only on counters that still hold the
    /// announcement. False when some counter no longer held it: a sweep resolved it meanwhile
    /// (the writer was frozen past `counterSettle`), so that change is not applied, and the
    /// caller must treat the write as unsettled. A throw leaves the outcome unknown: unsettled too.
    func settle(_ changes: [String: Counts], token: String) async throws(MongoError) -> Bool {
        guard !changes.isEmpty else { return true }
        let field = Self.announcementField(token)
        let groups = Dictionary(grouping: changes.keys) { changes[$0] ?? Counts() }
        let statements = groups.sorted { $0.key.values.lexicographicallyPrecedes($1.key.values) }.map { change, users in
            var increments = change.increments
            increments["inflight"] = .int64(-1)
            if !change.isZero { increments["seq"] = .int64(1) }
            var filter: BSONDocument = ["_id": ["$in": .array(users.sorted().map(BSONValue.string))]]
            filter[field] = ["$exists": true]
            var update = BSONDocument()
            update["$unset"] = .document(BSONDocument([(field, .string(""))]))
            update["$inc"] = .document(increments)
            return MongoCollection.UpdateStatement(filter: filter, update: update, multi: true)
        }
        return try await counters.update(statements).matched == changes.count
    }

    /// One step of resolving unsettled announcements, idempotent and safe from any instance:
    /// deletes what unsettled creates inserted (their documents with the write's `run`), marks
    /// the counters stale, stamps each announcement `resolvedAt`, and retires those stamped at
    /// least `WriteTiming.confirmationGap` before (so the stale mark of the step that retires
    /// one comes after every late effect of its write has landed). Two steps a gap apart
    /// resolve an announcement; a constant number of statements per write, never one per user.
    static func resolve(_ writes: [PendingWrite], counters: MongoCollection, notifications: MongoCollection, now: Timestamp) async throws(MongoError) {
        guard !writes.isEmpty else { return }
        let byToken = Dictionary(grouping: writes, by: \.token).sorted { $0.key < $1.key }
        let ghosts: [BSONValue] = byToken.compactMap { token, writes in
            let users = Set(writes.filter(\.inserts).map(\.user)).sorted()
            guard !users.isEmpty else { return nil }
            return .document(["recipientId": ["$in": .array(users.map(BSONValue.string))], "run": .string(token)])
        }
        if !ghosts.isEmpty { _ = try await notifications.delete(["$or": .array(ghosts)], limit: 0) }
        let retireBefore = now.advanced(by: .zero - WriteTiming.confirmationGap).milliseconds
        var statements: [MongoCollection.UpdateStatement] = []
        for (token, writes) in byToken {
            let field = announcementField(token)
            let ids: BSONValue = ["$in": .array(Set(writes.map(\.user)).sorted().map(BSONValue.string))]
            var retire: BSONDocument = ["_id": ids]
            retire["\(field).resolvedAt"] = ["$lte": .datetime(retireBefore)]
            var unset = BSONDocument()
            unset["$unset"] = .document(BSONDocument([(field, .string(""))]))
            unset["$inc"] = ["inflight": .int64(-1)]
            statements.append(.init(filter: retire, update: unset, multi: true))
            var unstamped: BSONDocument = ["_id": ids]
            unstamped[field] = ["$exists": true]
            unstamped["\(field).resolvedAt"] = ["$exists": false]
            statements.append(.init(filter: unstamped, update: ["$set": .document(BSONDocument([("\(field).resolvedAt", .datetime(now.milliseconds))]))], multi: true))
        }
        statements.append(
            .init(
                filter: ["_id": ["$in": .array(Set(writes.map(\.user)).sorted().map(BSONValue.string))]],
                update: ["$set": ["stale": true], "$inc": ["seq": .int64(1)]], multi: true))
        _ = try await counters.update(statements)
    }

    /// The announcements of `counter` that a sweep must resolve: older than `before` (their
    /// writer gave up or died), or already being resolved.
    static func abandoned(in counter: BSONDocument?, user: String, before: Timestamp) -> [PendingWrite] {
        guard let pending = counter?["pending"]?.document else { return [] }
        return pending.fields.compactMap { token, value -> PendingWrite? in
            guard let entry = value.document else { return nil }
            let old = (entry["at"]?.datetime ?? 0) <= before.milliseconds
            guard old || entry["resolvedAt"] != nil else { return nil }
            return PendingWrite(user: user, token: token, inserts: entry["ins"]?.bool ?? false)
        }
    }

    /// One pass of the sweep (`CounterSweeper`): resolves one step of every abandoned
    /// announcement among up to `limit` counters with announcements, found by the `inflight`
    /// index. Returns how many announcements it stepped.
    func sweep(limit: Int = 1000) async throws(MongoError) -> Int {
        let now = SystemWallClock().now()
        let before = now.advanced(by: .zero - settle)
        let found = try await counters.find(["inflight": ["$gt": .int64(0)]], limit: limit, projection: ["pending": 1])
        let writes = found.flatMap { counter in Self.abandoned(in: counter, user: counter["_id"]?.string ?? "", before: before) }
        guard !writes.isEmpty else { return 0 }
        try await Self.resolve(writes, counters: counters, notifications: notifications, now: now)
        logger.notice(
            "Resolved writes whose counters were never settled (a writer timed out or died)",
            metadata: ["writes": "\(Set(writes.map(\.token)).count)", "users": "\(Set(writes.map(\.user)).count)"])
        await repaired(Array(Set(writes.map(\.user))))
        return writes.count
    }

    static func announcementField(_ token: String) -> String { "pending.\(token)" }

    /// A write's token: unique, and usable as a field name (no `.` or `$`).
    static func newToken() -> String { String(UInt64.random(in: 1...UInt64.max), radix: 36) }
}
