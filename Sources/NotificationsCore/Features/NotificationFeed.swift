public import Logging

/// A page of a user's feed, and how the cache served it.
public struct FeedPage: Sendable {
    public var items: [Notification]
    public var nextCursor: FeedCursor?
    public var unreadCount: Int
    public var cache: CacheStatus
}

/// `X-Cache`: `hit`/`miss` when the feed cache answered or was filled, `bypass` when Redis was not used.
public enum CacheStatus: String, Sendable {
    case hit, miss, bypass
}

/// The notifications feature: creating, listing, reading and deleting a user's notifications.
///
/// Routes stay thin and call this; it owns the rules (ids, timestamps, pagination).
public struct NotificationFeed: Sendable {
    let store: any NotificationStore
    let clock: any WallClock
    let metrics: ServiceMetrics
    let logger: Logger

    public init(store: any NotificationStore, clock: any WallClock = SystemWallClock(), metrics: ServiceMetrics, logger: Logger) {
        self.store = store
        self.clock = clock
        self.metrics = metrics
        self.logger = logger
    }

    public func create(_ request: NewNotification) async throws -> Notification {
        let now = clock.now()
        let notification = Notification(
            id: ObjectIDs.new(at: now), recipientId: request.recipientId, type: request.type, actorId: request.actorId,
            title: request.title, body: request.body, dataJSON: request.dataJSON, createdAt: now, readAt: nil)
        try await store.insert(notification)
        metrics.notificationsCreated(1)
        return notification
    }

    public func page(userId: String, limit: Int, cursor: FeedCursor?, unreadOnly: Bool) async throws -> FeedPage {
        // One extra item tells whether there is a next page without a count query.
        async let fetched = store.page(recipientId: userId, before: cursor?.lastID, limit: limit + 1, unreadOnly: unreadOnly)
        async let unread = store.unreadCount(recipientId: userId)
        var items = try await fetched
        let hasMore = items.count > limit
        if hasMore { items.removeLast(items.count - limit) }
        let next = hasMore ? items.last.map { FeedCursor(lastID: $0.id) } : nil
        return FeedPage(items: items, nextCursor: next, unreadCount: try await unread, cache: .bypass)
    }

    public func unreadCount(userId: String) async throws -> Int {
        try await store.unreadCount(recipientId: userId)
    }

    public func markRead(userId: String, id: String) async throws -> Notification? {
        try await store.markRead(recipientId: userId, id: id, at: clock.now())
    }

    public func markAllRead(userId: String) async throws -> Int {
        try await store.markAllRead(recipientId: userId, at: clock.now())
    }

    public func delete(userId: String, id: String) async throws -> Bool {
        try await store.delete(recipientId: userId, id: id)
    }
}
