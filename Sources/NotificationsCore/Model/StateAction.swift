/// A change of one inbox item's state (`POST /v1/users/{userId}/notifications/{id}/{action}`):
/// each sets or clears one time, and a repeat changes nothing.
public enum StateAction: String, Sendable, CaseIterable {
    /// Shown to its user: sets `seenAt`.
    case seen
    /// Acted on: sets `readAt`, and `seenAt` when it was null.
    case read
    /// Clears `readAt` only.
    case unread
    /// Put away: sets `archivedAt` (seen and read stay as they are).
    case archive
    case unarchive
}

/// What a bulk write does to each notification it selects (`POST …/notifications/batch`).
public enum BulkAction: Sendable, Equatable {
    case state(StateAction)
    case delete

    /// `seen`, `read`, `unread`, `archive`, `unarchive` or `delete`.
    public init?(rawValue: String) {
        if rawValue == "delete" {
            self = .delete
        } else if let action = StateAction(rawValue: rawValue) {
            self = .state(action)
        } else {
            return nil
        }
    }
}
