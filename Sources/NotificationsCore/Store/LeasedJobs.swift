internal import MongoStore

/// Which batch of a piece of background work is next, and whose lease it is: what every
/// progress write of it is fenced on.
struct JobLease: Sendable, Equatable {
    var key: String
    var token: String
    var batch: Int
}

/// The lease and progress of resumable background work, one record per piece of work in
/// `collection`: event fan-outs (`events`) and all-at-once operations (`bulk_operations`).
/// Each record holds `status` (`in_progress`, `completed`), `batch` (the next one),
/// `cursor` (where it starts), `batchEnd` (set while a batch is in flight: its exact range,
/// so a resumed batch covers the same items), a running count, `leaseToken` and `leaseUntil`.
///
/// Every progress write is conditional on the lease token and the batch index, so an owner
/// that froze and lost its lease cannot move the progress; a taker sets a new token.
struct LeasedJobs: Sendable {
    let collection: MongoCollection
    /// The record's running count: `created` for fan-outs, `updated` for bulk operations.
    let countField: String

    /// Finds the work whose owner stopped renewing (`abandoned`).
    static let leaseIndex = MongoCollection.IndexModel(name: "fanout_leases", keys: ["status": 1, "leaseUntil": 1])

    /// Fixes the batch's exact range (`end`), with `also`, and renews the lease, if the lease is still ours.
    func startBatch(_ lease: JobLease, end: BSONValue, leaseUntil: Timestamp, also: BSONDocument = [:]) async throws(MongoError) -> Bool {
        var set = also
        set["batchEnd"] = end
        set["leaseUntil"] = .datetime(leaseUntil.milliseconds)
        return try await fenced(lease, ["$set": .document(set)])
    }

    /// Extends the lease of the batch in flight, if the lease is still ours.
    func renew(_ lease: JobLease, until leaseUntil: Timestamp) async throws(MongoError) -> Bool {
        try await fenced(lease, ["$set": ["leaseUntil": .datetime(leaseUntil.milliseconds)]])
    }

    /// Records a finished batch: the next cursor, the count, no batch in flight.
    func finishBatch(_ lease: JobLease, cursor: BSONValue, count: Int, leaseUntil: Timestamp, also: BSONDocument = [:]) async throws(MongoError) -> Bool {
        var set = also
        set["batch"] = .int64(Int64(lease.batch + 1))
        set["cursor"] = cursor
        set["batchEnd"] = .null
        set["leaseUntil"] = .datetime(leaseUntil.milliseconds)
        return try await fenced(lease, ["$set": .document(set), "$inc": .document(BSONDocument([(countField, .int64(Int64(count)))]))])
    }

    func complete(_ lease: JobLease, at time: Timestamp, also: BSONDocument = [:]) async throws(MongoError) -> Bool {
        var set = also
        set["status"] = "completed"
        set["batchEnd"] = .null
        set["completedAt"] = .datetime(time.milliseconds)
        return try await fenced(lease, ["$set": .document(set)])
    }

    private func fenced(_ lease: JobLease, _ update: BSONDocument) async throws(MongoError) -> Bool {
        try await collection.update(
            ["_id": .string(lease.key), "leaseToken": .string(lease.token), "batch": .int64(Int64(lease.batch))], update
        ).matched > 0
    }

    /// Work whose owner stopped renewing its lease (sorted on the lease index).
    func abandoned(now: Timestamp, limit: Int) async throws(MongoError) -> [BSONDocument] {
        try await collection.find(
            ["status": "in_progress", "leaseUntil": ["$lt": .datetime(now.milliseconds)]], sort: ["status": 1, "leaseUntil": 1], limit: limit)
    }

    /// Takes abandoned work over with a new lease token; nil if someone else did first, or if its
    /// lease does not run out before `now` after all (the owner renewed it since the sweep read
    /// it: live work is never taken).
    func takeOver(_ lease: JobLease, now: Timestamp, token: String, leaseUntil: Timestamp) async throws(MongoError) -> BSONDocument? {
        try await collection.findAndModify(
            [
                "_id": .string(lease.key), "leaseToken": .string(lease.token), "status": "in_progress",
                "leaseUntil": ["$lt": .datetime(now.milliseconds)],
            ],
            update: ["$set": ["leaseToken": .string(token), "leaseUntil": .datetime(leaseUntil.milliseconds)]], returnNew: true)
    }

    /// Takes over at most `limit` pieces of abandoned work, each with a new token and a lease of
    /// `lease` from its take, handing each record as taken to `resume`; stops when `stopping()`.
    func takeOverAbandoned(
        clock: any WallClock, lease: Duration, limit: Int, stopping: () -> Bool, resume: (BSONDocument) -> Void
    ) async throws(MongoError) {
        for document in try await abandoned(now: clock.now(), limit: limit) {
            guard !stopping() else { return }
            guard let key = document["_id"]?.string, let token = document["leaseToken"]?.string, let batch = document["batch"]?.int64
            else { continue }
            let takenAt = clock.now()
            let abandonedLease = JobLease(key: key, token: token, batch: Int(batch))
            if let taken = try await takeOver(abandonedLease, now: takenAt, token: Self.newToken(), leaseUntil: takenAt.advanced(by: lease)) {
                resume(taken)
            }
        }
    }

    static func newToken() -> String {
        (0..<2).map { _ in String(UInt64.random(in: 0...UInt64.max), radix: 36) }.joined(separator: "-")
    }
}
