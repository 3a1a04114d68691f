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

    /// The scope's notifications in [lower, upper) that the action changes (by their stored class).
    func changeable(from lower: ObjectID? = nil, below upper: ObjectID) -> BSONDocument {
        var filter = within(from: lower, below: upper)
        filter["sc"] = ["$in": .array(classes.map { .int32($0.code) })]
        return filter
    }

    /// The scope's notifications in [lower, upper), whatever their class.
    func within(from lower: ObjectID?, below upper: ObjectID) -> BSONDocument {
        var range: BSONDocument = ["$lt": .objectID(upper)]
        if let lower { range["$gte"] = .objectID(lower) }
        var filter: BSONDocument = ["recipientId": .string(recipientId), "_id": .document(range)]
        if let type { filter["type"] = .string(type) }
        return filter
    }
}

/// A batch of an all-at-once operation, as its notifications fix it.
struct AllAtOnceBatch: Sendable, Equatable {
    /// The batch's lower end (inclusive): the id of the last notification it covers; nil when it
    /// covers everything left below its upper end (it is the last batch).
    var lower: ObjectID?
    /// The notifications it covers that the action changes, as it found them: its updates go by
    /// these ids (points on `_id`, which every server looks up directly, where a range over a
    /// large user's notifications may be scanned), so what it changes is exactly what it found.
    var ids: [ObjectID]
    /// The classes present among them (where its updates start).
    var classes: Set<StateClass>
}

/// All-at-once operations in batches of at most 1000 (`AllAtOnceOperations`): each batch's range
/// is fixed first from the notifications themselves (the id of the last one it covers), then
/// changed with one update per state class present in it, so a batch run again covers the same
/// items, and what it changed is counted exactly.
extension MongoNotificationStore {
    /// The next batch below `upper` of at most `limit` notifications the action changes: one
    /// sorted query for their ids and classes (one more than `limit`: whether any remain beyond).
    func nextBatch(_ scope: AllAtOnceScope, below upper: ObjectID, limit: Int) async throws -> AllAtOnceBatch {
        let found = try await mongoOperation {
            try await notifications.find(scope.changeable(below: upper), sort: Self.feedSort, limit: limit + 1, projection: ["_id": 1, "sc": 1])
        }
        let covered = Array(found.prefix(limit))
        return Self.batch(of: covered, lower: found.count > limit ? covered.last?["_id"]?.objectID : nil)
    }

    /// The batch in [lower, upper) as it is now: a batch run again (after its run was cut short)
    /// covers the same range, and finds in it what is still to change.
    func batch(_ scope: AllAtOnceScope, from lower: ObjectID?, below upper: ObjectID) async throws -> AllAtOnceBatch {
        let found = try await mongoOperation {
            try await notifications.find(scope.changeable(from: lower, below: upper), sort: Self.feedSort, projection: ["_id": 1, "sc": 1])
        }
        return Self.batch(of: found, lower: lower)
    }

    private static func batch(of documents: [BSONDocument], lower: ObjectID?) -> AllAtOnceBatch {
        AllAtOnceBatch(
            lower: lower, ids: documents.compactMap { $0["_id"]?.objectID },
            classes: Set(documents.compactMap { $0["sc"]?.int64.flatMap(StateClass.init(code:)) }))
    }

    /// Whether more than `limit` notifications below `upper` are the action's to change.
    func exceeds(_ scope: AllAtOnceScope, below upper: ObjectID, limit: Int) async throws -> Bool {
        let filter = scope.changeable(below: upper)
        return try await mongoOperation {
            try await !notifications.find(filter, sort: Self.feedSort, skip: limit, limit: 1, projection: ["_id": 1]).isEmpty
        }
    }

    /// Applies the scope's action to the batch's notifications: one update per class
    /// (`updateByClass`), each also setting `marker` (the operation's id) on what it changes; the
    /// counts change exactly, as for every counting write. Returns how many changed.
    func apply(_ scope: AllAtOnceScope, batch: AllAtOnceBatch, marker: String, at time: Timestamp) async throws -> Int {
        guard !batch.ids.isEmpty else { return 0 }
        let selected: BSONDocument = ["recipientId": .string(scope.recipientId), "_id": ["$in": .array(batch.ids.map(BSONValue.objectID))]]
        return try await countingWrite(scope.recipientId) { () throws(MongoError) in
            try await updateByClass(selected, sort: nil, changeable: scope.classes, present: (batch.classes, batch.ids.count)) { (stateClass, filter) throws(MongoError) in
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
        var filter = scope.within(from: lower, below: upper)
        filter["op"] = .string(marker)
        return try await mongoOperation {
            try await notifications.find(filter, sort: Self.feedSort, projection: ["_id": 1]).count
        }
    }
}
