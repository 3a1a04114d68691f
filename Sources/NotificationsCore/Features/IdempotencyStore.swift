internal import Crypto
public import Logging
public import MongoStore
internal import RedisClient
internal import Synchronization

/// `Idempotency-Key`: exactly-once processing of POSTs, and its rule for Redis failures.
///
/// Lookup order (seed 004): in memory (bounded, this instance) → Redis (shared, fast) →
/// MongoDB (`idempotency_records`, the source of truth). A key is claimed by inserting its
/// record in MongoDB, whose unique `_id` lets exactly one request win even across instances
/// and with Redis down. The winner's response (non-5xx) replaces the claim; a failed request
/// releases it. A claim whose holder died is taken over after `claimLease`.
public final class IdempotencyStore: Sendable {
    public enum Begin: Sendable {
        /// Process the request, then `complete` (or `release`) the claim.
        case proceed(Claim)
        /// The same request was answered before: send this again.
        case replay(IdempotencyRecord.StoredResponse)
        /// The first request with this key is still running (409 `idempotency_in_progress`).
        case inProgress
        /// Same key, other route or body (422 `idempotency_key_reused`).
        case mismatch
    }

    public struct Claim: Sendable {
        let id: String
        let fingerprint: String
        let claimedAt: Timestamp
    }

    let records: MongoCollection
    let gateway: RedisGateway
    let ttl: Duration
    let claimLease: Duration
    let clock: any WallClock
    let logger: Logger
    private let memory: RecentRecords
    private let releaser: BackgroundDeleter

    init(
        records: MongoCollection, gateway: RedisGateway, ttlSeconds: Int64, claimLease: Duration = .seconds(60), clock: any WallClock,
        logger: Logger
    ) {
        self.records = records
        self.gateway = gateway
        self.ttl = .seconds(ttlSeconds)
        self.claimLease = claimLease
        self.clock = clock
        self.logger = logger
        self.memory = RecentRecords(capacity: 10_000)
        self.releaser = BackgroundDeleter(logger: logger)
    }

    public convenience init(pool: MongoClientPool, gateway: RedisGateway, ttlSeconds: Int64, logger: Logger) {
        self.init(records: pool.collection("idempotency_records"), gateway: gateway, ttlSeconds: ttlSeconds, clock: SystemWallClock(), logger: logger)
    }

    /// The TTL index (MongoDB expires records eventually; readers also check `expiresAt`).
    public func createIndexes() async throws {
        try await mongoOperation { try await records.createIndexes([.init(name: "expires", keys: ["expiresAt": 1], expireAfterSeconds: 0)]) }
    }

    /// SHA-256 of what makes two requests "the same": method, path and body.
    public static func fingerprint(method: String, path: String, body: [UInt8]) -> String {
        var hasher = SHA256()
        hasher.update(data: Array("\(method) \(path)\n".utf8))
        hasher.update(data: body)
        return hasher.finalize().map { String($0, radix: 16).count == 1 ? "0" + String($0, radix: 16) : String($0, radix: 16) }.joined()
    }

    /// Looks the key up and claims it if it is new. Throws `StoreError` when MongoDB is unusable
    /// (nothing is claimed then).
    public func begin(scope: String, key: String, fingerprint: String) async throws -> Begin {
        let id = "\(scope):\(key)"
        let now = clock.now()
        if let record = memory.get(id, now: now) { return Self.answer(record, fingerprint: fingerprint) }
        if let cached = await gateway.call(.idempotency, { pool in try await pool.send(.get(Self.redisKey(id))) }),
            case .bulkString(let bytes) = cached, let record = IdempotencyRecord(redisValue: bytes), record.expiresAt > now
        {
            if record.response != nil { memory.put(id, record) }
            return Self.answer(record, fingerprint: fingerprint)
        }
        return try await claimInMongo(id: id, fingerprint: fingerprint, now: now)
    }

    /// Stores the response for repeats (everywhere it is looked up).
    public func complete(_ claim: Claim, response: IdempotencyRecord.StoredResponse) async {
        let record = IdempotencyRecord(fingerprint: claim.fingerprint, response: response, expiresAt: claim.claimedAt.advanced(by: ttl))
        memory.put(claim.id, record)
        do {
            // Only our own claim: a holder whose claim was taken over must not overwrite the new one.
            _ = try await records.update(
                ["_id": .string(claim.id), "claimedAt": .datetime(claim.claimedAt.milliseconds)],
                ["$set": [
                    "state": "completed", "status": .int32(Int32(response.status)), "body": .string(String(decoding: response.body, as: UTF8.self)),
                    "contentType": .string(response.contentType), "location": response.location.map(BSONValue.string) ?? .null,
                ]])
        } catch {
            logger.error("Storing an idempotent response failed; a repeat on another instance may run again",
                         metadata: ["key": "\(claim.id)", "error": "\(error)"])
        }
        _ = await gateway.call(.idempotency) { [ttl] pool in
            try await pool.send(.set(Self.redisKey(claim.id), record.redisValue, ttlMilliseconds: max(1, ttl.milliseconds)))
        }
    }

    /// Gives the key back after a failed request, so a retry is processed.
    public func release(_ claim: Claim) async {
        memory.remove(claim.id)
        _ = await gateway.call(.idempotency, essential: true) { pool in try await pool.send(.del([Self.redisKey(claim.id)])) }
        let ownClaim: BSONDocument = ["_id": .string(claim.id), "claimedAt": .datetime(claim.claimedAt.milliseconds)]
        do {
            _ = try await records.delete(ownClaim, limit: 1)
        } catch {
            // MongoDB failed under the request: keep trying in the background, so the key is
            // free as soon as MongoDB is back (not only when the claim's lease runs out).
            logger.warning("Releasing an idempotency claim failed; retrying until MongoDB answers",
                           metadata: ["key": "\(claim.id)", "error": "\(error)"])
            releaser.deleteEventually(ownClaim, from: records)
        }
    }

    private func claimInMongo(id: String, fingerprint: String, now: Timestamp) async throws -> Begin {
        let claim = Claim(id: id, fingerprint: fingerprint, claimedAt: now)
        let document: BSONDocument = [
            "_id": .string(id), "fingerprint": .string(fingerprint), "state": "in_progress",
            "claimedAt": .datetime(now.milliseconds), "expiresAt": .datetime(now.advanced(by: ttl).milliseconds),
        ]
        if try await insertClaim(document) { return await claimed(claim) }
        guard let existing = try await mongoOperation({ try await records.findOne(["_id": .string(id)]) }) else {
            // Released between our insert and this read: try once more.
            return try await insertClaim(document) ? await claimed(claim) : .inProgress
        }
        let expired = (existing["expiresAt"]?.datetime ?? 0) <= now.milliseconds
        let abandoned = existing["state"]?.string == "in_progress"
            && (existing["claimedAt"]?.datetime ?? 0) <= now.milliseconds - claimLease.milliseconds
        if expired || abandoned {
            // Take over only the exact claim we saw, so two takers cannot both win.
            let filter: BSONDocument = ["_id": .string(id), "claimedAt": existing["claimedAt"] ?? .null]
            let replacement: BSONDocument = [
                "$set": .document(document.removing("_id")), "$unset": ["status": "", "body": "", "contentType": "", "location": ""],
            ]
            let taken = try await mongoOperation { try await records.findAndModify(filter, update: replacement) }
            return taken == nil ? .inProgress : await claimed(claim)
        }
        let record = Self.record(existing)
        if record.response != nil { memory.put(id, record) }
        return Self.answer(record, fingerprint: fingerprint)
    }

    /// True when the claim was inserted, false when the key already has a record.
    private func insertClaim(_ document: BSONDocument) async throws -> Bool {
        do {
            try await records.insertOne(document)
            return true
        } catch {
            if case .duplicateKey = error { return false }
            throw StoreError.unavailable(error.description)
        }
    }

    /// Tells the other instances (through Redis, best-effort) that the key is being processed.
    private func claimed(_ claim: Claim) async -> Begin {
        let marker = IdempotencyRecord(fingerprint: claim.fingerprint, response: nil, expiresAt: claim.claimedAt.advanced(by: claimLease))
        _ = await gateway.call(.idempotency) { [claimLease] pool in
            try await pool.send(.set(Self.redisKey(claim.id), marker.redisValue, onlyIfAbsent: true, ttlMilliseconds: claimLease.milliseconds))
        }
        return .proceed(claim)
    }

    private static func answer(_ record: IdempotencyRecord, fingerprint: String) -> Begin {
        guard record.fingerprint == fingerprint else { return .mismatch }
        return record.response.map(Begin.replay) ?? .inProgress
    }

    static func record(_ document: BSONDocument) -> IdempotencyRecord {
        var response: IdempotencyRecord.StoredResponse?
        if document["state"]?.string == "completed", let status = document["status"]?.int64 {
            response = .init(
                status: Int(status), body: Array((document["body"]?.string ?? "").utf8),
                contentType: document["contentType"]?.string ?? "application/json", location: document["location"]?.string)
        }
        return IdempotencyRecord(
            fingerprint: document["fingerprint"]?.string ?? "", response: response,
            expiresAt: Timestamp(milliseconds: document["expiresAt"]?.datetime ?? 0))
    }

    static func redisKey(_ id: String) -> String { "idem:\(id)" }
}

/// Completed records recently seen on this instance: bounded, oldest dropped first.
private final class RecentRecords: Sendable {
    private struct State {
        var records: [String: IdempotencyRecord] = [:]
        var order: [String] = []
    }

    private let state = Mutex(State())
    private let capacity: Int

    init(capacity: Int) {
        self.capacity = capacity
    }

    func get(_ id: String, now: Timestamp) -> IdempotencyRecord? {
        state.withLock { state in
            guard let record = state.records[id], record.expiresAt > now else { return nil }
            return record
        }
    }

    func put(_ id: String, _ record: IdempotencyRecord) {
        state.withLock { state in
            if state.records.updateValue(record, forKey: id) == nil { state.order.append(id) }
            if state.order.count > capacity {
                let evicted = state.order.prefix(state.order.count - capacity)
                for key in evicted { state.records[key] = nil }
                state.order.removeFirst(evicted.count)
            }
        }
    }

    func remove(_ id: String) {
        state.withLock { state in
            if state.records.removeValue(forKey: id) != nil { state.order.removeAll { $0 == id } }
        }
    }
}

extension BSONDocument {
    func removing(_ key: String) -> BSONDocument {
        var copy = self
        copy[key] = nil
        return copy
    }
}
