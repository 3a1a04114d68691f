public import MongoStore

/// Who follows whom, in MongoDB (`followers`).
///
/// One document per edge, `_id` = `userId/followerId` (neither id may hold a `/`), so follow
/// and unfollow are idempotent by the key itself; an index on `(userId, followerId)` serves the
/// pages, which are "follower ids after the cursor" sorted on that index: no duplicates or gaps
/// while followers are added, and the fan-out reads its audience with the same query.
public struct FollowerStore: Sendable {
    let followers: MongoCollection

    public init(pool: MongoClientPool) {
        followers = pool.collection("followers")
    }

    public func createIndexes() async throws {
        try await mongoOperation {
            try await followers.createIndexes([.init(name: "user_followers", keys: ["userId": 1, "followerId": 1], unique: true)])
        }
    }

    static func key(_ user: String, _ follower: String) -> BSONValue { .string("\(user)/\(follower)") }

    /// Idempotent: following twice is following once.
    public func follow(user: String, follower: String, at time: Timestamp) async throws {
        try await mongoOperation {
            do {
                try await followers.insertOne([
                    "_id": Self.key(user, follower), "userId": .string(user), "followerId": .string(follower),
                    "createdAt": .datetime(time.milliseconds),
                ])
            } catch MongoError.duplicateKey {
                return
            }
        }
    }

    /// Idempotent: unfollowing someone who does not follow is fine.
    public func unfollow(user: String, follower: String) async throws {
        _ = try await mongoOperation { try await followers.delete(["_id": Self.key(user, follower)], limit: 1) }
    }

    /// Follower ids of `user` after `after` (exclusive), in id order.
    /// Every follower of `user` after `after` (exclusive) up to `through` (inclusive), in order:
    /// a fan-out batch's exact range, read again when the batch is resumed.
    public func range(user: String, after: String?, through: String) async throws -> [String] {
        var bounds: BSONDocument = ["$lte": .string(through)]
        if let after { bounds["$gt"] = .string(after) }
        return try await mongoOperation {
            try await followers.find(["userId": .string(user), "followerId": .document(bounds)], sort: ["userId": 1, "followerId": 1], projection: ["followerId": 1])
                .compactMap { $0["followerId"]?.string }
        }
    }

    public func page(user: String, after: String?, limit: Int) async throws -> [String] {
        var filter: BSONDocument = ["userId": .string(user)]
        if let after { filter["followerId"] = ["$gt": .string(after)] }
        return try await mongoOperation {
            try await followers.find(filter, sort: ["userId": 1, "followerId": 1], limit: limit, projection: ["followerId": 1])
                .compactMap { $0["followerId"]?.string }
        }
    }
}
