internal import MongoStore

/// What an all-at-once operation (`seen-all`, `read-all`, `archive-all`) covers: the user's
/// non-archived notifications its action changes, of `type` when given.
public struct AllAtOnceScope: Sendable, Equatable {
    public var recipientId: String
    public var action: StateAction
    public var type: String?

    public init(recipientId: String, action: StateAction, type: String?) {
        self.recipientId = recipientId
        self.action = action
        self.type = type
    }

    /// The classes the action changes (archived ones are not covered, as the counts do not cover them).
    var classes: [StateClass] { StateClass.live.filter { $0.after(action) != nil } }

    /// The scope's notifications below `upper` that the action changes (by their stored class).
    func changeable(below upper: ObjectID) -> BSONDocument {
        var filter = filter(from: nil, below: upper)
        filter["sc"] = ["$in": .array(classes.map { .int32($0.code) })]
        return filter
    }

    /// The scope's notifications with ids in [lower, upper).
    func filter(from lower: ObjectID?, below upper: ObjectID) -> BSONDocument {
        var range: BSONDocument = ["$lt": .objectID(upper)]
        if let lower { range["$gte"] = .objectID(lower) }
        var filter: BSONDocument = ["recipientId": .string(recipientId), "_id": .document(range)]
        if let type { filter["type"] = .string(type) }
        return filter
    }
}

/// The next batch of an all-at-once operation, as its notifications fix it.
struct AllAtOnceBatch: Sendable, Equatable {
    /// The batch's lower end (inclusive): the id of the last notification it covers; nil when it
    /// covers everything left below its upper end (it is the last batch).
    var lower: ObjectID?
    /// The classes present among the notifications it covers (where its updates start).
    var classes: Set<StateClass>
    /// How many notifications it covers.
    var covered: Int
}

/// All-at-once operations in batches of at most 1000 (`AllAtOnceOperations`): each batch's range
/// is fixed first from the notifications themselves (the id of the last one it covers), then
/// changed with one update per state class present in it, so a batch run again covers the same
/// items, and what it changed is counted exactly.
extension MongoNotificationStore {
    /// The next batch below `upper` of at most `limit` notifications the action changes: one query
    /// for their ids and classes (and one more, to know whether any remain beyond them).
    func nextBatch(_ scope: AllAtOnceScope, below upper: ObjectID, limit: Int) async throws -> AllAtOnceBatch {
        let filter = scope.changeable(below: upper)
        let found = try await mongoOperation {
            try await notifications.find(filter, sort: Self.feedSort, limit: limit + 1, projection: ["_id": 1, "sc": 1])
        }
        let covered = found.prefix(limit)
        let present = Set(covered.compactMap { $0["sc"]?.int64.flatMap(StateClass.init(code:)) })
        return AllAtOnceBatch(lower: found.count > limit ? covered.last?["_id"]?.objectID : nil, classes: present, covered: covered.count)
    }

    /// Whether more than `limit` notifications below `upper` are the action's to change.
    func exceeds(_ scope: AllAtOnceScope, below upper: ObjectID, limit: Int) async throws -> Bool {
        let filter = scope.changeable(below: upper)
        return try await mongoOperation {
            try await !notifications.find(filter, sort: Self.feedSort, skip: limit, limit: 1, projection: ["_id": 1]).isEmpty
        }
    }

    /// Applies the scope's action to its notifications in [lower, upper), starting from the
    /// classes `present` there (looked up when nil): one update per class (`updateByClass`), each
    /// also setting `marker` (the operation's id) on what it changes; the counts change exactly,
    /// as for every counting write. Returns how many changed.
    func applyRange(
        _ scope: AllAtOnceScope, present: Set<StateClass>?, from lower: ObjectID?, below upper: ObjectID, marker: String, at time: Timestamp
    ) async throws -> Int {
        try await countingWrite(scope.recipientId) { () throws(MongoError) in
            try await updateByClass(scope.filter(from: lower, below: upper), sort: Self.feedSort, changeable: scope.classes, present: present) {
                (stateClass, filter) throws(MongoError) in
                guard let applied = stateClass.applying(scope.action, at: time) else { return (0, Counts()) }
                var set = applied.set
                set["op"] = .string(marker)
                let modified = try await notifications.update(filter, ["$set": .document(set)], multi: true).modified
                return (modified, (applied.after.counts - stateClass.counts) * modified)
            }
        }
    }

    /// How many notifications in [lower, upper) carry `marker`: what every run of an interrupted
    /// batch changed, together (a fact MongoDB holds, whichever run did it).
    func marked(_ scope: AllAtOnceScope, from lower: ObjectID?, below upper: ObjectID, marker: String) async throws -> Int {
        var filter = scope.filter(from: lower, below: upper)
        filter["op"] = .string(marker)
        return try await mongoOperation {
            try await notifications.find(filter, sort: Self.feedSort, projection: ["_id": 1]).count
        }
    }
}
