internal import MongoStore

/// One of the eight combinations of (archived, read, seen) a notification can be in.
///
/// A bulk write (by ids, or all at once) is one command per class it changes: each filters on
/// its class as well as on the request's scope, so what it changes is known from the
/// command's count alone, and the write's change to the counts is exact without reading the
/// documents first and without a statement per notification.
struct StateClass: Hashable, CaseIterable {
    var archived: Bool
    var read: Bool
    var seen: Bool

    static let allCases: [StateClass] = [false, true].flatMap { archived in
        [false, true].flatMap { read in [false, true].map { seen in StateClass(archived: archived, read: read, seen: seen) } }
    }

    /// The classes of non-archived notifications (what all-at-once operations and the counts cover).
    static let live = allCases.filter { !$0.archived }

    /// Matches the documents of this class (a missing state field reads as null).
    var filter: BSONDocument {
        func state(_ set: Bool) -> BSONValue { set ? ["$ne": .null] : .null }
        return ["archivedAt": state(archived), "readAt": state(read), "seenAt": state(seen)]
    }

    /// The class as one small number, stored in each document as `sc` so that every feed filter
    /// is a set of point values on one indexed field (see `matching(_:)`).
    var code: Int32 { (archived ? 4 : 0) + (read ? 2 : 0) + (seen ? 1 : 0) }

    /// The classes a feed filter lists (by the same fields the counts go by, so a filter lists
    /// what its count counts).
    static func matching(_ filter: FeedFilter) -> [StateClass] {
        allCases.filter { state in
            let archived = switch filter.archived {
            case .exclude: !state.archived
            case .only: state.archived
            case .include: true
            }
            let status = switch filter.status {
            case .all: true
            case .unread: !state.read
            case .read: state.read
            case .unseen: !state.seen
            case .seen: state.seen
            }
            return archived && status
        }
    }

    /// What one notification of this class contributes to the counts.
    var counts: Counts {
        guard !archived else { return Counts(archived: 1) }
        return Counts(unread: read ? 0 : 1, unseen: seen ? 0 : 1, total: 1)
    }

    /// The class `action` takes a notification of this class to, and the fields it sets; nil
    /// when the action changes nothing here (a repeat).
    func applying(_ action: StateAction, at time: Timestamp) -> (after: StateClass, set: BSONDocument)? {
        let now: BSONValue = .datetime(time.milliseconds)
        var after = self
        var set = BSONDocument()
        switch action {
        case .seen:
            guard !seen else { return nil }
            after.seen = true
            set["seenAt"] = now
        case .read:
            guard !read else { return nil }
            after.read = true
            set["readAt"] = now
            if !seen {
                after.seen = true
                set["seenAt"] = now
            }
        case .unread:
            guard read else { return nil }
            after.read = false
            set["readAt"] = .null
        case .archive:
            guard !archived else { return nil }
            after.archived = true
            set["archivedAt"] = now
        case .unarchive:
            guard archived else { return nil }
            after.archived = false
            set["archivedAt"] = .null
        }
        set["sc"] = .int32(after.code)
        return (after, set)
    }
}

extension StateClass {
    /// The class of a stored notification document (a missing state field reads as null).
    init(document: BSONDocument) {
        func set(_ field: String) -> Bool { !(document[field]?.isNull ?? true) }
        self.init(archived: set("archivedAt"), read: set("readAt"), seen: set("seenAt"))
    }
}

extension Counts {
    static func * (lhs: Counts, n: Int) -> Counts {
        Counts(unread: lhs.unread * n, unseen: lhs.unseen * n, total: lhs.total * n, archived: lhs.archived * n)
    }
}
