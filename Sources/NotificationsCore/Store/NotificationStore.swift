internal import MongoStore

/// The durable store of notifications; MongoDB in production (`MongoNotificationStore`).
///
/// Implementations throw `StoreError` only.
public protocol NotificationStore: Sendable {
    /// Stores new notifications together and counts each as unread for its recipient; each gets
    /// its own answer (in order). When a notification with its id is already stored (an earlier
    /// run of the same idempotent request planned the id and stored it), nothing is written and
    /// the stored one is returned with `created: false`. Failures are `StoreError`s.
    /// `timeout` bounds the insert (each request of the batch has its own deadline).
    func insertEach(_ batch: [Notification], within timeout: Duration) async -> [Result<(notification: Notification, created: Bool), any Error>]
    /// How long one write may take (`MONGODB_OPERATION_TIMEOUT_MS`).
    var writeTimeout: Duration { get }
    /// Stores a fan-out batch in one unordered insert; notifications already stored (same id:
    /// the batch ran before) are skipped. Counters follow in a constant number of commands; for a
    /// `resumed` batch (its first run may have counted some) they are marked for a recount.
    /// Returns the notifications this call stored.
    func insertBatch(_ batch: [Notification], resumed: Bool) async throws -> [Notification]
    /// The recipient's notifications with an id greater than `after`, newest first, at most `limit`.
    func newer(recipientId: String, than after: String, limit: Int) async throws -> [Notification]
    /// Newest first, strictly older than `before` (an id) when given.
    func page(recipientId: String, before: String?, limit: Int, unreadOnly: Bool) async throws -> [Notification]
    func unreadCount(recipientId: String) async throws -> Int
    /// Sets `readAt` unless already set; nil when the recipient has no such notification.
    func markRead(recipientId: String, id: String, at: Timestamp) async throws -> Notification?
    /// Marks every unread notification of the recipient read; returns how many changed.
    func markAllRead(recipientId: String, at: Timestamp) async throws -> Int
    /// False when the recipient has no such notification.
    func delete(recipientId: String, id: String) async throws -> Bool
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
