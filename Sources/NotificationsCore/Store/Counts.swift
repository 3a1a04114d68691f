internal import MongoStore

/// A user's counts, as the counter document keeps them: over the non-archived notifications
/// (`unread`, `unseen`, `total`) and the archived ones (`archived`). Also the change a write
/// makes to them: what its notifications contribute after it minus what they did before.
public struct Counts: Sendable, Hashable {
    public var unread = 0
    public var unseen = 0
    public var total = 0
    public var archived = 0

    public init(unread: Int = 0, unseen: Int = 0, total: Int = 0, archived: Int = 0) {
        self.unread = unread
        self.unseen = unseen
        self.total = total
        self.archived = archived
    }

    /// What one notification in this state contributes (`StateClass.counts`).
    static func of(readAt: Timestamp?, seenAt: Timestamp?, archivedAt: Timestamp?) -> Counts {
        StateClass(archived: archivedAt != nil, read: readAt != nil, seen: seenAt != nil).counts
    }

    static func of(_ notification: Notification) -> Counts {
        of(readAt: notification.readAt, seenAt: notification.seenAt, archivedAt: notification.archivedAt)
    }

    /// What a stored notification document contributes (a missing state field reads as null).
    static func of(document: BSONDocument) -> Counts {
        StateClass(document: document).counts
    }

    /// `n` new notifications, unread and unseen.
    static func created(_ n: Int) -> Counts { Counts(unread: n, unseen: n, total: n) }

    static func + (lhs: Counts, rhs: Counts) -> Counts {
        Counts(unread: lhs.unread + rhs.unread, unseen: lhs.unseen + rhs.unseen, total: lhs.total + rhs.total, archived: lhs.archived + rhs.archived)
    }

    static func - (lhs: Counts, rhs: Counts) -> Counts {
        lhs + Counts(unread: -rhs.unread, unseen: -rhs.unseen, total: -rhs.total, archived: -rhs.archived)
    }

    static func += (lhs: inout Counts, rhs: Counts) { lhs = lhs + rhs }

    var isZero: Bool { self == Counts() }

    /// The counter fields, in the order the counter document keeps them.
    static let fields = ["unread", "unseen", "total", "archived"]

    var values: [Int] { [unread, unseen, total, archived] }

    /// The `$inc` of this change: its non-zero fields.
    var increments: BSONDocument {
        var document = BSONDocument()
        for (field, value) in zip(Self.fields, values) where value != 0 { document[field] = .int64(Int64(value)) }
        return document
    }

    /// The fields as a document (a reconciled counter's values, a recount's).
    var document: BSONDocument {
        var document = BSONDocument()
        for (field, value) in zip(Self.fields, values) { document[field] = .int64(Int64(value)) }
        return document
    }

    /// Read from a counter document (or a recount's subdocument); missing fields read as 0,
    /// negative ones (a transient of racing changes) as 0.
    init(document: BSONDocument?) {
        func value(_ field: String) -> Int { max(0, Int(document?[field]?.int64 ?? 0)) }
        self.init(unread: value("unread"), unseen: value("unseen"), total: value("total"), archived: value("archived"))
    }
}
