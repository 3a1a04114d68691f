internal import MongoStore

/// The durable store of notifications; MongoDB in production (`MongoNotificationStore`).
///
/// Implementations throw `StoreError` only.
public protocol NotificationStore: Sendable {
    /// One group-commit write (`NotificationWriter`): single creates and fan-out batches in one
    /// unordered insert, then the counters in a constant number of commands. Each gets its own
    /// answer, in order; failures are `StoreError`s. `timeout` bounds the insert (each request
    /// of the write has its own deadline).
    ///
    /// A create counts as unread for its recipient. When a notification with its id is already
    /// stored (an earlier run of the same idempotent request planned the id and stored it),
    /// nothing is written and the stored one is returned with `created: false`.
    ///
    /// A fan-out batch's notifications already stored (same id: the batch ran before) are
    /// skipped; the answer is those this call stored. For a `resumed` batch (its first run may
    /// have counted some) the counters are marked for a recount instead of incremented.
    func insert(creates: [Notification], batches: [FanoutBatch], within timeout: Duration) async -> InsertAnswers
    /// How long one write may take (`MONGODB_OPERATION_TIMEOUT_MS`).
    var writeTimeout: Duration { get }
    /// How many notifications like `sample` (any recipient) fit in one insert command, by the
    /// limits the server reports: a fan-out batch is never larger, so each batch is one command.
    func notificationsPerInsert(like sample: Notification) async throws -> Int
    /// What streams look for, for many recipients in one query: their notifications (not
    /// expired) written after a time, or with an id greater than one (`since`), and with an id
    /// greater than `after` when given (the next page), oldest id first, at most `limit`.
    func streamed(recipientIds: [String], since: StreamSince, after: String?, limit: Int) async throws -> [Notification]
    /// The counts of many users in one query (a user whose counter is not trusted is recounted).
    func counts(recipientIds: [String]) async throws -> [String: Counts]
    /// Newest first, strictly older than `before` (an id) when given, those `filter` lists and
    /// not expired.
    func page(recipientId: String, before: String?, limit: Int, filter: FeedFilter) async throws -> [Notification]
    /// The user's counts, kept with each write (no count query unless a counter is not trusted).
    func counts(recipientId: String) async throws -> Counts
    /// Applies `action` to one notification (a repeat changes nothing and keeps the times);
    /// nil when the recipient has no such notification.
    func setState(_ action: StateAction, recipientId: String, id: String, at: Timestamp) async throws -> Notification?
    /// Applies `action` to the recipient's notifications with these ids (at most 1000; unknown ones and other users' skipped), in a constant number of
    /// commands (one per state class it changes), never a statement per notification; returns
    /// how many changed.
    func bulk(_ action: BulkAction, recipientId: String, ids: [String], at: Timestamp) async throws -> Int
    /// False when the recipient has no such notification.
    func delete(recipientId: String, id: String) async throws -> Bool
}

/// Where a stream's look at MongoDB starts (strictly after it).
public enum StreamSince: Sendable, Hashable {
    /// Written (inserted, or re-marked by a resumed fan-out batch) after this time: what a
    /// check looks for, since an id's time never follows its write.
    case written(Timestamp)
    /// An id greater than this one: what a resume looks for.
    case id(String)
}

/// An event fan-out batch written by `NotificationStore.insert`.
public struct FanoutBatch: Sendable {
    public var notifications: [Notification]
    /// Its first run was interrupted: which counters it incremented is unknown.
    public var resumed: Bool
    /// For a resumed batch, every recipient of its range but the actor, eligible now or not:
    /// each counter its first run may have incremented is recounted.
    public var candidates: [String] = []
    /// Names this batch (event and batch index) in the counters it increments, so its `+1`s
    /// land once per user however many times it runs (`UserCounters`).
    public var marker: String
}

/// The answers of one `NotificationStore.insert`, in the order of its creates and batches.
public struct InsertAnswers: Sendable {
    public var creates: [Result<(notification: Notification, created: Bool), any Error>]
    public var batches: [Result<[Notification], any Error>]
}

extension NotificationStore {
    /// Creates alone (`insert` without fan-out batches).
    public func insertEach(_ batch: [Notification], within timeout: Duration) async -> [Result<(notification: Notification, created: Bool), any Error>] {
        await insert(creates: batch, batches: [], within: timeout).creates
    }
}

/// Why the store could not do what was asked.
public enum StoreError: Error, Sendable, Equatable {
    /// The store did not answer in time or could not be reached (503 `storage_unavailable`).
    case unavailable(String)
    /// Too much MongoDB work is already queued on this instance; nothing was done (503 `overloaded`).
    case overloaded

    init(_ error: MongoError) {
        self = error == .overloaded ? .overloaded : .unavailable(error.description)
    }
}

/// Runs MongoDB work so that every MongoDB failure leaves the caller as `StoreError`
/// (503 `storage_unavailable`), never as a driver error.
func mongoOperation<T>(_ body: () async throws -> T) async throws -> T {
    do {
        return try await body()
    } catch let error as MongoError {
        throw StoreError(error)
    }
}
