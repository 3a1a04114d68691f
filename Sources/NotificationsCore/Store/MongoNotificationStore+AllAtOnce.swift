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
    var classes: [StateClass] { StateClass.live.filter { $0.applying(action, at: Timestamp(milliseconds: 0)) != nil } }

    /// The scope's notifications with ids in [lower, upper).
    func filter(from lower: ObjectID?, below upper: ObjectID) -> BSONDocument {
        var range: BSONDocument = ["$lt": .objectID(upper)]
        if let lower { range["$gte"] = .objectID(lower) }
        var filter: BSONDocument = ["recipientId": .string(recipientId), "_id": .document(range)]
        if let type { filter["type"] = .string(type) }
        return filter
    }
}

/// All-at-once operations in batches of at most 1000 (`AllAtOnceOperations`): each batch's range
/// is fixed first from the notifications themselves (the id of the last one it covers), then
/// changed with one update per state class, so a batch run again covers the same items, and
/// what it changed is counted exactly.
extension MongoNotificationStore {
    /// The lower end of the next batch below `upper`: the id of the `limit`-th notification (newest
    /// first) the action changes; nil when no more than `limit` remain (the batch is the last).
    func batchEnd(_ scope: AllAtOnceScope, below upper: ObjectID, limit: Int) async throws -> ObjectID? {
        var filter = scope.filter(from: nil, below: upper)
        filter["sc"] = ["$in": .array(scope.classes.map { .int32($0.code) })]
        return try await mongoOperation {
            try await notifications.find(filter, sort: Self.feedSort, skip: limit - 1, limit: 1, projection: ["_id": 1]).first?["_id"]?.objectID
        }
    }

    /// Applies the scope's action to its notifications in [lower, upper): one update per class
    /// it changes, each also setting `marker` (the operation's id) on what it changes; the
    /// counts change exactly, as for every counting write. Returns how many changed.
    func applyRange(_ scope: AllAtOnceScope, from lower: ObjectID?, below upper: ObjectID, marker: String, at time: Timestamp) async throws -> Int {
        try await countingWrite(scope.recipientId) { () throws(MongoError) in
            var change = Counts()
            var changed = 0
            for stateClass in scope.classes {
                guard let applied = stateClass.applying(scope.action, at: time) else { continue }
                var set = applied.set
                set["op"] = .string(marker)
                var filter = scope.filter(from: lower, below: upper)
                for (key, value) in stateClass.filter.fields { filter[key] = value }
                let modified = try await notifications.update(filter, ["$set": .document(set)], multi: true).modified
                change += (applied.after.counts - stateClass.counts) * modified
                changed += modified
            }
            return (changed, change)
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
