public import Logging
public import MongoStore

/// Notifications in MongoDB.
///
/// Collections: `notifications` (one document per notification, `_id` a time-ordered
/// ObjectId, indexed on `(recipientId, _id desc)`; every feed query sorts on that index so
/// servers that only use an index for a sorted query use it) and `user_counters` (one
/// document per user holding the unread count, so no read ever runs a count query).
///
/// The notification document is the commit point of every write; the counter follows it
/// (`UnreadCounters`). A write whose outcome is unknown (timed out, connection lost: the
/// server may still apply it) is made harmless: an insert is deleted again in the background
/// (`BackgroundDeleter`), and a read, read-all or delete marks the user's counter for a recount.
public struct MongoNotificationStore: NotificationStore {
    let notifications: MongoCollection
    let pool: MongoClientPool
    let logger: Logger
    let counters: UnreadCounters
    let lateInserts: BackgroundDeleter

    /// - Parameter counterRepaired: called when a user's counter was marked for a recount in the
    ///   background (the feed cache drops that user's entries).
    public init(
        pool: MongoClientPool, metrics: ServiceMetrics, logger: Logger, counterRepaired: @escaping @Sendable (String) async -> Void = { _ in }
    ) {
        self.pool = pool
        self.logger = logger
        let notifications = pool.collection("notifications")
        self.notifications = notifications
        self.counters = UnreadCounters(
            notifications: notifications, counters: pool.collection("user_counters"),
            settle: WriteTiming(writeDeadline: .milliseconds(pool.operationTimeoutMilliseconds)).counterSettle, metrics: metrics, logger: logger,
            repaired: counterRepaired)
        let counters = self.counters
        self.lateInserts = BackgroundDeleter(collection: notifications, metrics: metrics, logger: logger) { recipients in
            for recipient in Set(recipients) { counters.markStale(recipient) }
        }
    }

    /// Creates the indexes this store relies on (idempotent; run at start-up and by `create-indexes`).
    public func createIndexes() async throws {
        try await mongoOperation {
            try await notifications.createIndexes([
                .init(name: "recipient_feed", keys: ["recipientId": 1, "_id": -1]),
                // Streams' checks and polls: what was written lately, whatever its id's time.
                .init(name: "recipient_written", keys: ["recipientId": 1, "writtenAt": 1]),
            ])
        }
    }

    static let feedSort: BSONDocument = ["recipientId": 1, "_id": -1]

    public var writeTimeout: Duration { .milliseconds(pool.operationTimeoutMilliseconds) }

    public func notificationsPerInsert(like sample: Notification) async throws -> Int {
        let limits = try await mongoOperation { try await pool.writeLimits() }
        // Sized with the longest recipient id there can be, so every recipient's document fits.
        var widest = sample
        widest.recipientId = String(repeating: "x", count: Validation.maxUserIDLength)
        return limits.itemsPerCommand(itemSize: Self.document(widest).encodedSize)
    }

    /// Writes concurrent creates and fan-out batches together (group commit, `NotificationWriter`):
    /// one unordered insert, then the counters in a constant number of commands. Each gets its
    /// own answer: one that fails fails alone; when the insert's outcome is unknown (timed out,
    /// connection lost) every one of them fails, and each create is deleted again in the
    /// background if the server applied it after all (by this write's run token).
    public func insert(creates: [Notification], batches: [FanoutBatch], within timeout: Duration) async -> InsertAnswers {
        // This write's token: a late copy of a create is deleted only if it is this run's (see BackgroundDeleter).
        let run = String(UInt64.random(in: 1...UInt64.max), radix: 36)
        // When this write was sent: a stream's check finds it by this, whatever its id's time
        // (a resumed fan-out batch keeps the ids, and so the time, its first run planned).
        let writtenAt = BSONValue.datetime(SystemWallClock().now().milliseconds)
        let createDocuments = creates.map { notification in
            var document = Self.document(notification)
            document["run"] = .string(run)
            document["writtenAt"] = writtenAt
            return document
        }
        let documents = createDocuments + batches.flatMap { batch in
            batch.notifications.map { notification in
                var document = Self.document(notification)
                document["writtenAt"] = writtenAt
                return document
            }
        }
        guard !documents.isEmpty else {
            // A resumed batch none of whose candidates is eligible now: its first run's counts are redone.
            for batch in batches { await counters.markStaleMany(batch.candidates, marker: batch.marker) }
            return InsertAnswers(creates: [], batches: batches.map { _ in .success([]) })
        }
        // Counters a multi-document `$inc` will need exist before the insert, so only that `$inc`
        // follows its commit (`WriteTiming.counterSettle`). Nothing is written if this fails.
        // Both come out of the write's one budget.
        let started = ContinuousClock.now
        do {
            let recipients = batches.flatMap { $0.notifications.map(\.recipientId) } + (Set(creates.map(\.recipientId)).count > 1 ? creates.map(\.recipientId) : [])
            if !recipients.isEmpty { try await counters.ensureCounters(recipients, within: timeout) }
        } catch {
            return InsertAnswers(creates: creates.map { _ in .failure(StoreError(error)) }, batches: batches.map { _ in .failure(StoreError(error)) })
        }
        let errors: [Int: MongoError]
        do {
            errors = try await notifications.insertEach(documents, timeout: max(.milliseconds(1), timeout - (ContinuousClock.now - started)))
        } catch where error.isUnavailable {
            // The server may still apply them: creates must not stay (their clients got a 503),
            // and counters are not trusted while a ghost may be visible (a read-all would count
            // it). A fan-out batch is resumed later with the same ids; its counters are recounted then.
            for (notification, document) in zip(creates, createDocuments) { forget(document, run: run, recipient: notification.recipientId) }
            return InsertAnswers(creates: creates.map { _ in .failure(StoreError(error)) }, batches: batches.map { _ in .failure(StoreError(error)) })
        } catch {
            // Refused as a whole (nothing written): every request of the write gets the error.
            return InsertAnswers(creates: creates.map { _ in .failure(StoreError(error)) }, batches: batches.map { _ in .failure(StoreError(error)) })
        }
        var createAnswers: [Result<(notification: Notification, created: Bool), any Error>] = []
        var counted: [String] = []
        for (index, notification) in creates.enumerated() {
            switch errors[index] {
            case nil:
                counted.append(notification.recipientId)
                createAnswers.append(.success((notification, true)))
            case .duplicateKey?:
                createAnswers.append(await adopt(notification, document: createDocuments[index], run: run))
            case let error?:
                createAnswers.append(.failure(StoreError(error)))
            }
        }
        await counters.incrementMany(counted, ensured: true)
        var batchAnswers: [Result<[Notification], any Error>] = []
        var offset = creates.count
        for batch in batches {
            defer { offset += batch.notifications.count }
            var stored: [Notification] = []
            var earlier: [BSONValue] = []
            var failure: MongoError?
            for (index, notification) in batch.notifications.enumerated() {
                switch errors[offset + index] {
                case nil: stored.append(notification)
                // Stored by an earlier run of this batch (maybe applied late, after that run gave up).
                case .duplicateKey?: earlier.append(ObjectID(hex: notification.id).map(BSONValue.objectID) ?? .string(notification.id))
                case let error?: failure = failure ?? error
                }
            }
            if batch.resumed, failure == nil, !earlier.isEmpty {
                // Whether the earlier run's streams ever heard of them is unknown: written again
                // as of now, streams' checks find them. Best effort: their publish is redone too.
                _ = try? await notifications.update(["_id": ["$in": .array(earlier)]], ["$set": ["writtenAt": writtenAt]], multi: true)
            }
            // Each batch's counters on their own, under the batch's marker: its `+1`s land once
            // per user, whichever run (or a frozen owner woken late) sends them.
            if let failure {
                // Some of it is stored: the batch is written again later, and counted afresh.
                await counters.markStaleMany(batch.notifications.map(\.recipientId))
                batchAnswers.append(.failure(StoreError(failure)))
            } else if batch.resumed {
                // Its first run may have counted any candidate (also one who muted since): recount,
                // and take the batch's `+1` over from that run.
                await counters.markStaleMany(batch.candidates + batch.notifications.map(\.recipientId), marker: batch.marker)
                batchAnswers.append(.success(stored))
            } else {
                await counters.incrementMany(stored.map(\.recipientId), marker: batch.marker, ensured: true)
                batchAnswers.append(.success(stored))
            }
        }
        return InsertAnswers(creates: createAnswers, batches: batchAnswers)
    }

    /// The id was planned by an earlier run of the same idempotent request, which stored it.
    /// Adopt it (stamping our run, so that run's pending cleanup leaves it), and recount: a late
    /// copy of that run may never have been counted.
    private func adopt(_ notification: Notification, document: BSONDocument, run: String) async -> Result<(notification: Notification, created: Bool), any Error> {
        let id = document["_id"] ?? .null
        do {
            guard let stored = try await notifications.findAndModify(["_id": id], update: ["$set": ["run": .string(run)]], returnNew: true)
                .flatMap(Self.notification)
            else { return .failure(StoreError.unavailable("a notification with this id was stored and is gone")) }
            counters.markStale(notification.recipientId)
            return .success((stored, false))
        } catch {
            if error.isUnavailable { forget(document, run: run, recipient: notification.recipientId) }
            return .failure(StoreError(error))
        }
    }

    /// A write of ours may or may not have been applied: delete it in the background if it was,
    /// and recount the recipient's counter.
    private func forget(_ document: BSONDocument, run: String, recipient: String) {
        lateInserts.deleteEventually(.init(id: document["_id"] ?? .null, run: run, recipient: recipient))
        counters.markStale(recipient)
    }

    public func page(recipientId: String, before: String?, limit: Int, unreadOnly: Bool) async throws -> [Notification] {
        var filter: BSONDocument = ["recipientId": .string(recipientId)]
        if let before, let id = ObjectID(hex: before) { filter["_id"] = ["$lt": .objectID(id)] }
        if unreadOnly { filter["readAt"] = .null }
        return try await mongoOperation {
            try await notifications.find(filter, sort: Self.feedSort, limit: limit).compactMap(Self.notification)
        }
    }

    public func written(recipientId: String, since: Timestamp, limit: Int) async throws -> [Notification] {
        try await mongoOperation {
            try await notifications.find(
                ["recipientId": .string(recipientId), "writtenAt": ["$gt": .datetime(since.milliseconds)]], sort: ["recipientId": 1, "writtenAt": 1],
                limit: limit
            ).compactMap(Self.notification)
        }
    }

    public func newer(recipientId: String, than after: String, limit: Int) async throws -> [Notification] {
        guard let id = ObjectID(hex: after) else { return [] }
        return try await mongoOperation {
            try await notifications.find(
                ["recipientId": .string(recipientId), "_id": ["$gt": .objectID(id)]], sort: Self.feedSort, limit: limit
            ).compactMap(Self.notification)
        }
    }

    public func unreadCount(recipientId: String) async throws -> Int {
        try await mongoOperation { try await counters.count(recipientId) }
    }

    public func markRead(recipientId: String, id: String, at: Timestamp) async throws -> Notification? {
        guard let objectID = ObjectID(hex: id) else { return nil }
        return try await mongoOperation {
            let filter: BSONDocument = ["_id": .objectID(objectID), "recipientId": .string(recipientId)]
            var unreadFilter = filter
            unreadFilter["readAt"] = .null
            // Only the request that flips readAt decrements the counter, so repeats are idempotent.
            let result = try await countingWrite(recipientId) {
                try await notifications.update(unreadFilter, ["$set": ["readAt": .datetime(at.milliseconds)]])
            }
            if result.modified > 0 { await counters.adjust(recipientId, by: -1) }
            return try await notifications.findOne(filter).flatMap(Self.notification)
        }
    }

    public func markAllRead(recipientId: String, at: Timestamp) async throws -> Int {
        try await mongoOperation {
            let result = try await countingWrite(recipientId) {
                try await notifications.update(
                    ["recipientId": .string(recipientId), "readAt": .null], ["$set": ["readAt": .datetime(at.milliseconds)]], multi: true)
            }
            if result.modified > 0 { await counters.adjust(recipientId, by: -result.modified) }
            return result.modified
        }
    }

    public func delete(recipientId: String, id: String) async throws -> Bool {
        guard let objectID = ObjectID(hex: id) else { return false }
        return try await mongoOperation {
            let removed = try await countingWrite(recipientId) {
                try await notifications.findAndModify(["_id": .objectID(objectID), "recipientId": .string(recipientId)], remove: true)
            }
            guard let removed else { return false }
            if removed["readAt"]?.isNull ?? true { await counters.adjust(recipientId, by: -1) }
            return true
        }
    }

    /// A write that changes the user's unread notifications: when its outcome is unknown (the
    /// server may apply it after we gave up, and a retry then changes nothing), the counter
    /// can no longer follow it, so it is marked for a recount.
    private func countingWrite<T>(_ recipientId: String, _ write: () async throws -> T) async throws -> T {
        do {
            return try await write()
        } catch {
            if (error as? MongoError)?.isUnavailable == true { counters.markStale(recipientId) }
            throw error
        }
    }

    // MARK: Mapping, explicit in both directions

    static func document(_ notification: Notification) -> BSONDocument {
        [
            "_id": ObjectID(hex: notification.id).map(BSONValue.objectID) ?? .string(notification.id),
            "recipientId": .string(notification.recipientId),
            "type": .string(notification.type),
            "actorId": notification.actorId.map(BSONValue.string) ?? .null,
            "title": notification.title.map(BSONValue.string) ?? .null,
            "body": notification.body.map(BSONValue.string) ?? .null,
            "data": .string(notification.dataJSON),
            "createdAt": .datetime(notification.createdAt.milliseconds),
            "readAt": notification.readAt.map { .datetime($0.milliseconds) } ?? .null,
        ]
    }

    static func notification(_ document: BSONDocument) -> Notification? {
        guard let id = document["_id"]?.objectID, let recipientId = document["recipientId"]?.string,
            let type = document["type"]?.string, let createdAt = document["createdAt"]?.datetime
        else { return nil }
        return Notification(
            id: id.description, recipientId: recipientId, type: type, actorId: document["actorId"]?.string,
            title: document["title"]?.string, body: document["body"]?.string, dataJSON: document["data"]?.string ?? "{}",
            createdAt: Timestamp(milliseconds: createdAt), readAt: document["readAt"]?.datetime.map(Timestamp.init(milliseconds:)))
    }
}
