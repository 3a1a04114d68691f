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

    /// The class `action` takes a notification of this class to; nil when the action changes
    /// nothing here (a repeat). `read` marks the item seen as well.
    func after(_ action: StateAction) -> StateClass? {
        var after = self
        switch action {
        case .seen: after.seen = true
        case .read: (after.read, after.seen) = (true, true)
        case .unread: after.read = false
        case .archive: after.archived = true
        case .unarchive: after.archived = false
        }
        return after == self ? nil : after
    }

    /// The class `action` takes a notification of this class to, and the fields that get it there:
    /// each state that becomes set gets `time`, each that becomes unset gets null. Nil for a repeat.
    func applying(_ action: StateAction, at time: Timestamp) -> (after: StateClass, set: BSONDocument)? {
        guard let after = after(action) else { return nil }
        var set = BSONDocument()
        for (field, was, becomes) in [("readAt", read, after.read), ("seenAt", seen, after.seen), ("archivedAt", archived, after.archived)]
        where was != becomes {
            set[field] = becomes ? .datetime(time.milliseconds) : .null
        }
        set["sc"] = .int32(after.code)
        return (after, set)
    }
}

extension StateClass {
    /// The order in which a write that changes the notifications of the `changeable` classes, one
    /// statement per class, updates them when those of `present` are there to change, such that
    /// no notification escapes it by changing class under a concurrent request: every class a
    /// concurrent action can move one of them to (while it is still the write's to change) is
    /// updated after the class it left, and is updated even when nothing was in it before.
    ///
    /// Nil when such moves can go round in a circle (archiving while another request toggles
    /// read and unread): no order is safe, so the write updates the `present` classes, then
    /// looks again for what is left (`MongoNotificationStore.updateByClass`).
    static func updateOrder(changeable: [StateClass], present: Set<StateClass>) -> [StateClass]? {
        let allowed = Set(changeable)
        var reached = present.intersection(allowed)
        var pending = Array(reached)
        var edges: [StateClass: Set<StateClass>] = [:]
        while let from = pending.popLast() {
            for action in StateAction.allCases {
                guard let to = from.after(action), allowed.contains(to) else { continue }
                edges[from, default: []].insert(to)
                if reached.insert(to).inserted { pending.append(to) }
            }
        }
        // Kahn's topological order, ties broken by `changeable`'s order so that it is stable.
        var incoming = Dictionary(uniqueKeysWithValues: reached.map { ($0, 0) })
        for targets in edges.values { for to in targets { incoming[to, default: 0] += 1 } }
        var order: [StateClass] = []
        while let next = changeable.first(where: { reached.contains($0) && incoming[$0] == 0 && !order.contains($0) }) {
            order.append(next)
            for to in edges[next] ?? [] { incoming[to, default: 0] -= 1 }
        }
        return order.count == reached.count ? order : nil
    }
}

extension StateClass {
    /// The class a stored `sc` names; nil for anything that is not a class's code.
    init?(code: Int64) {
        guard (0...7).contains(code) else { return nil }
        self.init(archived: code & 4 != 0, read: code & 2 != 0, seen: code & 1 != 0)
    }

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
