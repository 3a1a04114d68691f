internal import MongoStore

/// A named lease in MongoDB (`leases`, `_id` = the name): at most one holder at a time among
/// all instances, for background work that any of them may do but two should not do at once.
///
/// A holder that dies or freezes stops renewing, and the lease is taken once it runs out.
/// The work it guards must stay correct if a frozen holder wakes and finishes a step after
/// that (every renewal is fenced on the holder's token, so it stops at its next renewal).
struct MongoLease: Sendable {
    let leases: MongoCollection
    let name: String
    let duration: Duration
    let clock: any WallClock

    /// Takes the lease for `token` when nobody holds it (or its holder let it run out).
    func acquire(token: String) async throws(MongoError) -> Bool {
        let now = clock.now()
        let until = BSONValue.datetime(now.advanced(by: duration).milliseconds)
        let taken = try await leases.findAndModify(
            ["_id": .string(name), "until": ["$lt": .datetime(now.milliseconds)]], update: ["$set": ["holder": .string(token), "until": until]])
        if taken != nil { return true }
        do {
            try await leases.insertOne(["_id": .string(name), "holder": .string(token), "until": until])
            return true
        } catch .duplicateKey {
            return false
        }
    }

    /// Extends the lease if `token` still holds it.
    func renew(token: String) async throws(MongoError) -> Bool {
        let until = BSONValue.datetime(clock.now().advanced(by: duration).milliseconds)
        return try await leases.update(["_id": .string(name), "holder": .string(token)], ["$set": ["until": until]]).matched > 0
    }

    /// Lets the next instance take it at once.
    func release(token: String) async throws(MongoError) {
        _ = try await leases.update(["_id": .string(name), "holder": .string(token)], ["$set": ["until": .datetime(0)]])
    }
}
