/// A page of a user's feed, newest first.
public struct FeedPage: Sendable {
    public var items: [Notification]
    public var nextCursor: FeedCursor?
    /// The user's counts, whatever the page's filter.
    public var counts: Counts

    public init(items: [Notification], nextCursor: FeedCursor?, counts: Counts) {
        self.items = items
        self.nextCursor = nextCursor
        self.counts = counts
    }

    /// `{"items": [...], "nextCursor": ..., "unreadCount": N, "unseenCount": N, "totalCount": N}`.
    public var json: [UInt8] {
        var json = JSONWriter(capacity: 512 * max(1, items.count))
        json.object { object in
            object.array("items", items) { json, item in item.write(to: &json) }
            object.string("nextCursor", nextCursor?.encoded)
            object.integer("unreadCount", counts.unread)
            object.integer("unseenCount", counts.unseen)
            object.integer("totalCount", counts.total)
        }
        return json.bytes
    }
}

extension Counts {
    /// Read back from `json` (a cached counts body); nil if it is not one.
    init?(json bytes: [UInt8]) {
        guard case .object(let members)? = try? JSONValue.parse(bytes) else { return nil }
        func value(_ name: String) -> Int? { if case .integer(let n)? = members[name] { Int(n) } else { nil } }
        guard let unread = value("unreadCount"), let unseen = value("unseenCount"), let total = value("totalCount"),
            let archived = value("archivedCount")
        else { return nil }
        self.init(unread: unread, unseen: unseen, total: total, archived: archived)
    }

    /// `{"unreadCount", "unseenCount", "totalCount", "archivedCount"}` (`GET …/counts`).
    public var json: [UInt8] {
        var json = JSONWriter()
        json.object { object in
            object.integer("unreadCount", unread)
            object.integer("unseenCount", unseen)
            object.integer("totalCount", total)
            object.integer("archivedCount", archived)
        }
        return json.bytes
    }
}

/// The notifications feature: creating, listing, reading and deleting a user's notifications.
///
/// Routes stay thin and call this; it owns the rules (ids, timestamps, pagination).
public struct NotificationFeed: Sendable {
    let store: any NotificationStore
    let clock: any WallClock
    let cache: FeedCache
    let preferences: PreferenceService
    let streams: StreamPublisher
    /// Concurrent creates (and fan-out batches) are written together (group commit).
    let writer: NotificationWriter

    public init(
        store: any NotificationStore, writer: NotificationWriter, cache: FeedCache, preferences: PreferenceService,
        streams: StreamPublisher, clock: any WallClock = SystemWallClock()
    ) {
        self.streams = streams
        self.store = store
        self.writer = writer
        self.cache = cache
        self.preferences = preferences
        self.clock = clock
    }

    public enum Delivery: Sendable {
        case created(Notification)
        /// The recipient muted the type or turned `in_app` off: nothing is stored.
        case suppressed(Preferences.Suppression)
    }

    /// `POST /v1/notifications`: stored unless the recipient's preferences suppress it.
    public func deliver(_ request: NewNotification, plannedID: String? = nil) async throws -> Delivery {
        let settings = try await preferences.lookup(users: [request.recipientId])
        if let reason = settings[request.recipientId]?.suppression(of: request.type) { return .suppressed(reason) }
        return .created(try await create(request, plannedID: plannedID))
    }

    /// - Parameter plannedID: the id an idempotent request planned in its claim (its time part is
    ///   the creation time): a run of the same request that finds it already stored answers
    ///   with the stored notification and creates nothing.
    /// Stores a notification (no preference check: `deliver` makes it).
    public func create(_ request: NewNotification, plannedID: String? = nil) async throws -> Notification {
        let id = plannedID ?? ObjectIDs.new(at: clock.now())
        let createdAt = ObjectIDs.time(of: id) ?? clock.now()
        let notification = Notification(
            id: id, recipientId: request.recipientId, type: request.type, actorId: request.actorId,
            title: request.title, body: request.body, dataJSON: request.dataJSON, createdAt: createdAt, readAt: nil,
            expiresAt: request.expiresAt)
        return try await writer.create(notification).notification
    }

    /// Runs a write for `user`, then drops the user's cached feed, also when the write failed:
    /// a write whose outcome is unknown may still have been applied.
    private func invalidating<T>(_ user: String, _ write: () async throws -> T) async throws -> T {
        do {
            let result = try await write()
            await cache.invalidate(user: user)
            return result
        } catch {
            await cache.invalidate(user: user)
            throw error
        }
    }

    /// A feed page as response JSON, from the feed cache when it has it.
    public func page(userId: String, limit: Int, cursor: FeedCursor?, filter: FeedFilter = .inbox) async throws -> CachedJSON {
        try await cache.cached(user: userId, variant: Self.pageVariant(limit: limit, cursor: cursor, filter: filter), fill: { [self] in
            let page = try await loadPage(userId: userId, limit: limit, cursor: cursor, filter: filter)
            // A page must not be served from the cache after one of its items expired.
            let firstExpiry = page.items.compactMap(\.expiresAt).min()
            let now = clock.now()
            return FeedCache.Fill(body: page.json, lifetime: firstExpiry.map { .milliseconds(max(0, $0.milliseconds - now.milliseconds)) })
        })
    }

    func loadPage(userId: String, limit: Int, cursor: FeedCursor?, filter: FeedFilter) async throws -> FeedPage {
        // One extra item tells whether there is a next page without a count query.
        async let fetched = store.page(recipientId: userId, before: cursor?.lastID, limit: limit + 1, filter: filter)
        async let counts = store.counts(recipientId: userId)
        var items = try await fetched
        let hasMore = items.count > limit
        if hasMore { items.removeLast(items.count - limit) }
        let next = hasMore ? items.last.map { FeedCursor(lastID: $0.id) } : nil
        return FeedPage(items: items, nextCursor: next, counts: try await counts)
    }

    /// Every state change drops all of the user's entries, so a page cached under any filter
    /// is exact until the next write.
    static func pageVariant(limit: Int, cursor: FeedCursor?, filter: FeedFilter) -> String {
        "page:\(limit):\(cursor?.encoded ?? "first"):\(filter.cacheVariant)"
    }

    static let unreadCountVariant = "unread-count"

    /// The cache lookup `page` will make with these arguments.
    public func pageProbe(userId: String, limit: Int, cursor: FeedCursor?, filter: FeedFilter = .inbox) -> CacheProbe? {
        cache.probe(user: userId, variant: Self.pageVariant(limit: limit, cursor: cursor, filter: filter))
    }

    /// The cache lookup `unreadCount` will make.
    public func unreadCountProbe(userId: String) -> CacheProbe? {
        cache.probe(user: userId, variant: Self.unreadCountVariant)
    }

    /// `{"unreadCount": N}`, from the feed cache when it has it.
    public func unreadCount(userId: String) async throws -> CachedJSON {
        try await cache.cached(user: userId, variant: Self.unreadCountVariant) { [store] in
            let counts = try await store.counts(recipientId: userId)
            var json = JSONWriter()
            json.object { $0.integer("unreadCount", counts.unread) }
            return json.bytes
        }
    }

    static let countsVariant = "counts"

    /// The cache lookup `counts` will make.
    public func countsProbe(userId: String) -> CacheProbe? {
        cache.probe(user: userId, variant: Self.countsVariant)
    }

    /// `{"unreadCount", "unseenCount", "totalCount", "archivedCount"}`, from the feed cache when
    /// it has it, else from `load` (by default the store; a stream's shares its query).
    public func counts(userId: String, load: (@Sendable () async throws -> Counts)? = nil) async throws -> CachedJSON {
        try await cache.cached(user: userId, variant: Self.countsVariant) { [store] in
            if let load { return try await load().json }
            return try await store.counts(recipientId: userId).json
        }
    }

    /// One item's state (`seen`, `read`, `unread`, `archive`, `unarchive`); nil when the user has
    /// no such notification.
    public func setState(_ action: StateAction, userId: String, id: String) async throws -> Notification? {
        let changed = try await invalidating(userId) { try await store.setState(action, recipientId: userId, id: id, at: clock.now()) }
        if changed != nil { await streams.countChanged(user: userId) }
        return changed
    }

    /// `POST …/notifications/batch`: `action` on these ids (unknown ones and other users' skipped).
    public func batch(_ action: BulkAction, userId: String, ids: [String]) async throws -> Int {
        let updated = try await invalidating(userId) { try await store.bulk(action, recipientId: userId, ids: ids, at: clock.now()) }
        if updated > 0 { await streams.countChanged(user: userId) }
        return updated
    }

    /// After the retention remover deleted some of these users' notifications: their cached
    /// feeds are dropped and their streams get the new counts.
    func removed(from users: [String]) async {
        guard !users.isEmpty else { return }
        await cache.invalidateMany(users: users)
        await streams.publish(users.map { ($0, .countChanged) })
    }

    public func delete(userId: String, id: String) async throws -> Bool {
        let deleted = try await invalidating(userId) { try await store.delete(recipientId: userId, id: id) }
        if deleted { await streams.countChanged(user: userId) }
        return deleted
    }
}
