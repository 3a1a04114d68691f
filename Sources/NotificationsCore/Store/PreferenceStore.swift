public import MongoStore

/// Preferences in MongoDB (`preferences`, `_id` = user id); absent means the defaults.
public struct PreferenceStore: Sendable {
    let preferences: MongoCollection

    public init(pool: MongoClientPool) {
        preferences = pool.collection("preferences")
    }

    public func load(user: String) async throws -> Preferences {
        try await mongoOperation { try await preferences.findOne(["_id": .string(user)]).map(Self.preferences) ?? .defaults }
    }

    /// Many users in one query (sorted on `_id`, so servers that only use an index for a
    /// sorted query use it); users without a document get the defaults.
    public func load(users: [String]) async throws -> [String: Preferences] {
        guard !users.isEmpty else { return [:] }
        let documents = try await mongoOperation {
            try await preferences.find(["_id": ["$in": .array(users.map(BSONValue.string))]], sort: ["_id": 1])
        }
        var found: [String: Preferences] = [:]
        for document in documents {
            if let user = document["_id"]?.string { found[user] = Self.preferences(document) }
        }
        for user in users where found[user] == nil { found[user] = .defaults }
        return found
    }

    /// Replaces the user's preferences; returns them as stored (with `updatedAt`).
    public func save(user: String, _ value: Preferences, at time: Timestamp) async throws -> Preferences {
        var stored = value
        stored.updatedAt = time
        _ = try await mongoOperation {
            try await preferences.update(
                ["_id": .string(user)],
                ["$set": [
                    "mutedTypes": .array(value.mutedTypes.map(BSONValue.string)), "inApp": .bool(value.inApp), "email": .bool(value.email),
                    "push": .bool(value.push), "updatedAt": .datetime(time.milliseconds),
                ]],
                upsert: true)
        }
        return stored
    }

    static func preferences(_ document: BSONDocument) -> Preferences {
        Preferences(
            mutedTypes: document["mutedTypes"]?.array?.compactMap(\.string) ?? [], inApp: document["inApp"]?.bool ?? true,
            email: document["email"]?.bool ?? true, push: document["push"]?.bool ?? true,
            updatedAt: document["updatedAt"]?.datetime.map(Timestamp.init(milliseconds:)))
    }
}
