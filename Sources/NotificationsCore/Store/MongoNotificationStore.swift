public import Logging
public import MongoStore
internal import Synchronization

/// Notifications in MongoDB.
///
/// Collections: `notifications` (one document per notification, `_id` a time-ordered
/// ObjectId, indexed on `(recipientId, _id desc)`; every feed query sorts on that index so
/// servers that only use an index for a sorted query use it) and `user_counters` (one
/// document per user holding the unread count, so no read ever runs a count query).
///
/// The notification document is the commit point of every write; the counter follows it.
/// If the counter update fails after the commit, the write still succeeds (it is stored),
/// and the user's counter is recounted from the notifications on its next read.
public struct MongoNotificationStore: NotificationStore {
    let notifications: MongoCollection
    let counters: MongoCollection
    let pool: MongoClientPool
    let logger: Logger
    private let staleCounters = StaleCounters()
    private let deleter: BackgroundDeleter

    public init(pool: MongoClientPool, logger: Logger) {
        self.pool = pool
        self.logger = logger
        self.notifications = pool.collection("notifications")
        self.counters = pool.collection("user_counters")
        self.deleter = BackgroundDeleter(logger: logger)
    }

    /// Creates the indexes this store relies on (idempotent; run at start-up and by `create-indexes`).
    public func createIndexes() async throws {
        try await mongoOperation {
            try await notifications.createIndexes([.init(name: "recipient_feed", keys: ["recipientId": 1, "_id": -1])])
        }
    }

    static let feedSort: BSONDocument = ["recipientId": 1, "_id": -1]

    public func insert(_ notification: Notification) async throws {
        try await mongoOperation {
            do {
                try await notifications.insertOne(Self.document(notification))
            } catch let error as MongoError where error.isUnavailable {
                // The server may still apply it: make sure it does not stay.
                deleter.deleteEventually(["_id": Self.document(notification)["_id"] ?? .null], from: notifications)
                throw error
            }
            await adjustUnread(notification.recipientId, by: 1)
        }
    }

    public func page(recipientId: String, before: String?, limit: Int, unreadOnly: Bool) async throws -> [Notification] {
        var filter: BSONDocument = ["recipientId": .string(recipientId)]
        if let before, let id = ObjectID(hex: before) { filter["_id"] = ["$lt": .objectID(id)] }
        if unreadOnly { filter["readAt"] = .null }
        return try await mongoOperation {
            try await notifications.find(filter, sort: Self.feedSort, limit: limit).compactMap(Self.notification)
        }
    }

    public func unreadCount(recipientId: String) async throws -> Int {
        try await mongoOperation {
            if staleCounters.contains(recipientId) { return try await recount(recipientId) }
            let counter = try await counters.findOne(["_id": .string(recipientId)])
            return max(0, Int(counter?["unread"]?.int64 ?? 0))
        }
    }

    public func markRead(recipientId: String, id: String, at: Timestamp) async throws -> Notification? {
        guard let objectID = ObjectID(hex: id) else { return nil }
        return try await mongoOperation {
            let filter: BSONDocument = ["_id": .objectID(objectID), "recipientId": .string(recipientId)]
            var unreadFilter = filter
            unreadFilter["readAt"] = .null
            // Only the request that flips readAt decrements the counter, so repeats are idempotent.
            let result = try await notifications.update(unreadFilter, ["$set": ["readAt": .datetime(at.milliseconds)]])
            if result.modified > 0 { await adjustUnread(recipientId, by: -1) }
            return try await notifications.findOne(filter).flatMap(Self.notification)
        }
    }

    public func markAllRead(recipientId: String, at: Timestamp) async throws -> Int {
        try await mongoOperation {
            let result = try await notifications.update(
                ["recipientId": .string(recipientId), "readAt": .null], ["$set": ["readAt": .datetime(at.milliseconds)]], multi: true)
            if result.modified > 0 { await adjustUnread(recipientId, by: -result.modified) }
            return result.modified
        }
    }

    public func delete(recipientId: String, id: String) async throws -> Bool {
        guard let objectID = ObjectID(hex: id) else { return false }
        return try await mongoOperation {
            let removed = try await notifications.findAndModify(["_id": .objectID(objectID), "recipientId": .string(recipientId)], remove: true)
            guard let removed else { return false }
            if removed["readAt"]?.isNull ?? true { await adjustUnread(recipientId, by: -1) }
            return true
        }
    }


    /// Follows a committed write; a failure marks the counter for a recount instead of failing the write.
    private func adjustUnread(_ recipientId: String, by delta: Int) async {
        do {
            _ = try await counters.update(["_id": .string(recipientId)], ["$inc": ["unread": .int64(Int64(delta))]], upsert: true)
        } catch {
            staleCounters.insert(recipientId)
            logger.warning("Unread counter update failed; it will be recounted", metadata: ["user": "\(recipientId)", "error": "\(error)"])
        }
    }

    /// Counts the user's unread notifications (a sorted query on the feed index) and stores the count.
    private func recount(_ recipientId: String) async throws -> Int {
        let unread = try await notifications.find(
            ["recipientId": .string(recipientId), "readAt": .null], sort: Self.feedSort, projection: ["_id": 1])
        _ = try await counters.update(["_id": .string(recipientId)], ["$set": ["unread": .int64(Int64(unread.count))]], upsert: true)
        staleCounters.remove(recipientId)
        return unread.count
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

/// Users whose unread counter missed an update on this instance (bounded: a set of ids).
private final class StaleCounters: Sendable {
    private let users = Mutex<Set<String>>([])

    func insert(_ user: String) { _ = users.withLock { $0.insert(user) } }
    func remove(_ user: String) { _ = users.withLock { $0.remove(user) } }
    func contains(_ user: String) -> Bool { users.withLock { $0.contains(user) } }
}
