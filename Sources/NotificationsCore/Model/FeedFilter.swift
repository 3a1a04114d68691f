/// Which of a user's notifications a feed page lists: `status`, `archived` and `type` of
/// `GET /v1/users/{userId}/notifications`.
public struct FeedFilter: Sendable, Equatable {
    public enum Status: String, Sendable, CaseIterable {
        case all, unread, read, unseen, seen
    }

    public enum Archived: String, Sendable, CaseIterable {
        case exclude, include, only
    }

    public var status: Status
    public var archived: Archived
    public var type: String?

    public init(status: Status = .all, archived: Archived = .exclude, type: String? = nil) {
        self.status = status
        self.archived = archived
        self.type = type
    }

    /// The default feed: every non-archived notification.
    public static let inbox = FeedFilter()

    /// The feed cache's name for pages under this filter (the type is last: it may hold any
    /// character the user-id pattern allows, including `:`).
    var cacheVariant: String {
        "\(status.rawValue):\(archived.rawValue):\(type.map { "t=" + $0 } ?? "*")"
    }
}
