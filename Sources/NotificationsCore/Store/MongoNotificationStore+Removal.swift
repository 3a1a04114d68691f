internal import MongoStore

/// Removal of notifications in batches (`RetentionSweeper`): expired, older than the
/// retention, beyond a user's cap. Each batch is one query, then one delete per state class
/// it holds, and its users' counts are adjusted exactly through an announced write, like any
/// other counting write.
extension MongoNotificationStore {
    /// What a removal reads of each notification: who it is for and its state class.
    static let removalProjection: BSONDocument = ["_id": 1, "recipientId": 1, "archivedAt": 1, "readAt": 1, "seenAt": 1]

    /// Notifications whose `expiresAt` has passed, earliest first.
    func expired(now: Timestamp, limit: Int) async throws(MongoError) -> [BSONDocument] {
        try await notifications.find(
            ["expiresAt": ["$lte": .datetime(now.milliseconds)]], sort: ["expiresAt": 1], limit: limit, projection: Self.removalProjection)
    }

    /// Notifications created before `time`, oldest first.
    func created(before time: Timestamp, limit: Int) async throws(MongoError) -> [BSONDocument] {
        // The oldest first, alone: when it is recent enough (the usual case) nothing is scanned.
        guard let bound = ObjectID(hex: ObjectIDs.lowerBound(at: time)),
            let oldest = try await notifications.find([:], sort: ["_id": 1], limit: 1, projection: ["_id": 1]).first?["_id"]?.objectID,
            oldest < bound
        else { return [] }
        return try await notifications.find(["_id": ["$lt": .objectID(bound)]], sort: ["_id": 1], limit: limit, projection: Self.removalProjection)
    }

    /// Users who may hold more than `cap` notifications, by their counters (non-archived plus
    /// archived): a superset, since one of the two is above half the cap whenever the sum is
    /// above it; `beyondCap` decides from the documents.
    func usersPossiblyOver(cap: Int, limit: Int) async throws(MongoError) -> [String] {
        let half = BSONValue.int64(Int64(cap / 2))
        return try await counters.counters.find(
            ["$or": [["total": ["$gt": half]], ["archived": ["$gt": half]]]], limit: limit, projection: ["_id": 1, "total": 1, "archived": 1]
        )
        .filter { ($0["total"]?.int64 ?? 0) + ($0["archived"]?.int64 ?? 0) > Int64(cap) }
        .compactMap { $0["_id"]?.string }
    }

    /// The user's notifications after their newest `cap` (in feed order), newest of them first.
    func beyondCap(user: String, cap: Int, limit: Int) async throws(MongoError) -> [BSONDocument] {
        try await notifications.find(
            ["recipientId": .string(user)], sort: Self.feedSort, skip: cap, limit: limit, projection: Self.removalProjection)
    }

    /// Deletes these notifications (as read by the queries above): one delete per state class,
    /// each filtered on its class, so what a delete removed is known per user when it removed
    /// every document it was given. A document that changed class or went meanwhile leaves its
    /// class's users owed a recount instead. Returns how many were removed and from whom.
    func remove(_ documents: [BSONDocument]) async throws(MongoError) -> (removed: Int, users: Set<String>) {
        let byClass = Dictionary(grouping: documents) { StateClass(document: $0) }
        let users = Set(documents.compactMap { $0["recipientId"]?.string })
        guard !users.isEmpty else { return (0, []) }
        let removed = try await countingWrite(Array(users)) { () throws(MongoError) in
            var changes: [String: Counts] = [:]
            var unsure = Set<String>()
            var removed = 0
            for (stateClass, group) in byClass.sorted(by: { $0.key.code < $1.key.code }) {
                var filter = stateClass.filter
                filter["_id"] = ["$in": .array(group.compactMap { $0["_id"] })]
                let count = try await notifications.delete(filter, limit: 0)
                removed += count
                let owners = group.compactMap { $0["recipientId"]?.string }
                if count == group.count {
                    for user in owners { changes[user, default: Counts()] = changes[user, default: Counts()] - stateClass.counts }
                } else {
                    unsure.formUnion(owners)
                }
            }
            return (removed, changes, unsure)
        }
        return (removed, users)
    }
}
