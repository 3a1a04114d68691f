internal import Crypto
public import Logging
public import MongoStore
internal import RedisClient

/// `Idempotency-Key`: exactly-once processing of POSTs, and its rule for Redis failures.
///
/// Lookup order (seed 004): in memory (bounded, this instance) → Redis (shared, fast) →
/// MongoDB (`idempotency_records`, the source of truth). A key is claimed by inserting its
/// record in MongoDB, whose unique `_id` lets exactly one request win even across instances
/// and with Redis down. The winner's response (non-5xx) replaces the claim; a failed request
/// releases it. A claim whose holder died is taken over after `claimLease`.
///
/// Only MongoDB decides that a key is in progress: memory and Redis hold completed responses
/// only (answers a client got), so no cached tier can answer 409 for a claim MongoDB no
/// longer has. Every write is designed for an unknown outcome:
/// - a claim (or takeover) whose insert timed out is deleted again in the background, guarded
///   by its `claimedAt` (`RetryQueue`), so no key stays claimed by a request that got 503;
/// - a response MongoDB did not take is retried in the background until it does, and copied to
///   Redis at once, so it outlives this instance;
/// - a claim carries a planned result id, kept across an abandoned-claim takeover, so a
///   create run again by the taker finds the notification its first run stored (and answers
///   with it) instead of creating a second one.
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
        /// The id a notification created by this request gets: the same for every run of it.
        public let plannedID: String
        /// Taken over from a holder that died: its run may have stored the planned result, so
        /// giving the key back must keep the planned id (the record is marked abandoned, not deleted).
        let inherited: Bool
    }

    /// A claim whose insert or takeover may have been applied although the request failed.
    struct ClaimRef: Sendable {
        var id: String
        var claimedAt: Timestamp
        /// Give the key back by marking the record abandoned (keeping its planned id), not by deleting it.
        var keepPlannedID = false
    }

    /// A response MongoDB has not confirmed yet.
    struct PendingResponse: Sendable {
        var claim: ClaimRef
        var fields: BSONDocument
    }

    /// Redis copies live at most this long (and never past the record's expiry): Redis is the
    /// fast tier for recent repeats, MongoDB keeps the record for the whole retention.
    static let redisCopyTTL = Duration.seconds(3600)

    let records: MongoCollection
    let gateway: RedisGateway
    let ttl: Duration
    let claimLease: Duration
    let clock: any WallClock
    let logger: Logger
    let memory = IdempotencyMemory()
    let claimUndo: RetryQueue<ClaimRef>
    let pendingResponses: RetryQueue<PendingResponse>

    init(
        records: MongoCollection, gateway: RedisGateway, ttlSeconds: Int64, claimLease: Duration, clock: any WallClock,
        metrics: ServiceMetrics, logger: Logger
    ) {
        self.records = records
        self.gateway = gateway
        self.ttl = .seconds(ttlSeconds)
        self.claimLease = claimLease
        self.clock = clock
        self.logger = logger
        var undoPolicy = RetryQueue<ClaimRef>.Policy()
        undoPolicy.confirmations = 2
        claimUndo = RetryQueue(.idempotencyClaims, policy: undoPolicy, metrics: metrics, logger: logger) { claims in
            // Only those exact claims: a newer claim of the same key (a retry) stays.
            let deletions = claims.filter { !$0.keepPlannedID }
            if !deletions.isEmpty {
                _ = try await records.delete(["$or": .array(deletions.map { .document(Self.ownClaim($0)) })], limit: 0)
            }
            _ = try await records.update(claims.filter(\.keepPlannedID).map { .init(filter: Self.ownClaim($0), update: Self.abandon) })
        }
        var responsePolicy = RetryQueue<PendingResponse>.Policy()
        responsePolicy.batchSize = 100
        responsePolicy.firstAttemptAfter = .milliseconds(200)
        responsePolicy.giveUpAfter = .seconds(86_400)
        pendingResponses = RetryQueue(.idempotencyResponses, policy: responsePolicy, metrics: metrics, logger: logger) { responses in
            _ = try await records.update(responses.map { .init(filter: Self.ownClaim($0.claim), update: ["$set": .document($0.fields)]) })
        } completed: { responses in
            logger.notice("Stored idempotent responses MongoDB had missed", metadata: ["count": "\(responses.count)"])
        }
    }

    public convenience init(pool: MongoClientPool, gateway: RedisGateway, ttlSeconds: Int64, claimLease: Duration, metrics: ServiceMetrics, logger: Logger) {
        self.init(
            records: pool.collection("idempotency_records"), gateway: gateway, ttlSeconds: ttlSeconds, claimLease: claimLease,
            clock: SystemWallClock(), metrics: metrics, logger: logger)
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
        return hasher.finalize().hexString
    }

    /// Looks the key up and claims it if it is new. Throws `StoreError` when MongoDB is unusable
    /// (nothing stays claimed then).
    public func begin(scope: String, key: String, fingerprint: String) async throws -> Begin {
        let id = "\(scope):\(key)"
        let now = clock.now()
        if let record = memory.get(id, now: now) { return Self.answer(record, fingerprint: fingerprint) }
        if let cached = await gateway.call(.idempotency, key: Self.redisKey(id), { redis in try await redis.send(.get(Self.redisKey(id))) }),
            case .bulkString(let bytes) = cached, let record = IdempotencyRecord(redisValue: bytes), record.response != nil, record.expiresAt > now
        {
            memory.put(id, record)
            return Self.answer(record, fingerprint: fingerprint)
        }
        return try await claimInMongo(id: id, fingerprint: fingerprint, now: now)
    }

    /// Stores the response for repeats: in MongoDB first, and in memory and Redis once MongoDB
    /// took it for this very claim (a holder whose claim was taken over stores nothing).
    /// A response MongoDB did not take is retried in the background until it does, and is
    /// copied to Redis at once: the client has it, so it is the key's answer, and with the
    /// copy in Redis a repeat is answered with it by any instance even if this one dies before
    /// MongoDB takes it (the claim in MongoDB stays `in_progress` meanwhile, and is taken over
    /// only after the lease, by which time the copy answers every repeat first).
    public func complete(_ claim: Claim, response: IdempotencyRecord.StoredResponse) async {
        let record = IdempotencyRecord(fingerprint: claim.fingerprint, response: response, expiresAt: claim.claimedAt.advanced(by: ttl))
        let own = ClaimRef(id: claim.id, claimedAt: claim.claimedAt)
        let fields: BSONDocument = [
            "state": "completed", "status": .int32(Int32(response.status)), "body": .string(String(decoding: response.body, as: UTF8.self)),
            "contentType": .string(response.contentType), "location": response.location.map(BSONValue.string) ?? .null,
        ]
        do {
            let result = try await records.update(Self.ownClaim(own), ["$set": .document(fields)])
            guard result.matched > 0 else {
                logger.warning("Idempotency claim was taken over before its response was stored", metadata: ["key": "\(claim.id)"])
                return
            }
        } catch {
            logger.warning("Storing an idempotent response failed; retrying until MongoDB takes it", metadata: ["key": "\(claim.id)", "error": "\(error)"])
            pendingResponses.enqueue(PendingResponse(claim: own, fields: fields))
        }
        memory.put(claim.id, record)
        let copyTTL = min(Self.redisCopyTTL.milliseconds, record.expiresAt.milliseconds - clock.now().milliseconds)
        guard copyTTL > 0 else { return }
        _ = await gateway.call(.idempotency, key: Self.redisKey(claim.id), essential: true) { redis in
            try await redis.send(.set(Self.redisKey(claim.id), record.redisValue, ttlMilliseconds: copyTTL))
        }
    }

    /// Gives the key back after a failed request, so a retry is processed. When MongoDB does not
    /// answer, the claim is freed in the background as soon as it does (not after the lease).
    public func release(_ claim: Claim) async {
        let own = ClaimRef(id: claim.id, claimedAt: claim.claimedAt, keepPlannedID: claim.inherited)
        do {
            if claim.inherited {
                _ = try await records.update(Self.ownClaim(own), Self.abandon)
            } else {
                _ = try await records.delete(Self.ownClaim(own), limit: 1)
            }
        } catch {
            logger.warning("Releasing an idempotency claim failed; retrying until MongoDB answers", metadata: ["key": "\(claim.id)", "error": "\(error)"])
            claimUndo.enqueue(own)
        }
    }

    private func claimInMongo(id: String, fingerprint: String, now: Timestamp) async throws -> Begin {
        let claim = Claim(id: id, fingerprint: fingerprint, claimedAt: now, plannedID: ObjectIDs.new(at: now), inherited: false)
        if try await insertClaim(claim) { return .proceed(claim) }
        guard let existing = try await mongoOperation({ try await records.findOne(["_id": .string(id)]) }) else {
            // Released between our insert and this read: try once more.
            return try await insertClaim(claim) ? .proceed(claim) : .inProgress
        }
        let expired = (existing["expiresAt"]?.datetime ?? 0) <= now.milliseconds
        let abandoned = existing["state"]?.string == "in_progress"
            && (existing["claimedAt"]?.datetime ?? 0) <= now.milliseconds - claimLease.milliseconds
        if abandoned && !expired && existing["fingerprint"]?.string != fingerprint { return .mismatch }
        if expired || abandoned {
            // An abandoned claim's request may have stored its result: keep its planned id, so
            // running it again finds that result instead of making a second one.
            let inherited = abandoned && !expired && existing["plannedId"]?.string != nil
            let planned = inherited ? existing["plannedId"]?.string ?? claim.plannedID : claim.plannedID
            let taker = Claim(id: id, fingerprint: fingerprint, claimedAt: now, plannedID: planned, inherited: inherited)
            return try await takeOver(existing, by: taker) ? .proceed(taker) : .inProgress
        }
        let record = Self.record(existing)
        if record.response != nil { memory.put(id, record) }
        return Self.answer(record, fingerprint: fingerprint)
    }

    private func claimDocument(_ claim: Claim) -> BSONDocument {
        [
            "_id": .string(claim.id), "fingerprint": .string(claim.fingerprint), "state": "in_progress",
            "claimedAt": .datetime(claim.claimedAt.milliseconds), "expiresAt": .datetime(claim.claimedAt.advanced(by: ttl).milliseconds),
            "plannedId": .string(claim.plannedID),
        ]
    }

    /// True when the claim was inserted, false when the key already has a record. An insert of
    /// unknown outcome is undone in the background and reported as `StoreError`.
    private func insertClaim(_ claim: Claim) async throws -> Bool {
        do {
            try await records.insertOne(claimDocument(claim))
            return true
        } catch {
            if case .duplicateKey = error { return false }
            if error.isUnavailable { claimUndo.enqueue(ClaimRef(id: claim.id, claimedAt: claim.claimedAt)) }
            throw StoreError(error)
        }
    }

    /// Replaces exactly the record we saw (so two takers cannot both win); a takeover of unknown
    /// outcome is undone in the background like a claim.
    private func takeOver(_ existing: BSONDocument, by claim: Claim) async throws -> Bool {
        let filter: BSONDocument = ["_id": .string(claim.id), "claimedAt": existing["claimedAt"] ?? .null]
        let replacement: BSONDocument = [
            "$set": .document(claimDocument(claim).removing("_id")), "$unset": ["status": "", "body": "", "contentType": "", "location": ""],
        ]
        do {
            return try await records.findAndModify(filter, update: replacement) != nil
        } catch {
            if error.isUnavailable { claimUndo.enqueue(ClaimRef(id: claim.id, claimedAt: claim.claimedAt, keepPlannedID: claim.inherited)) }
            throw StoreError(error)
        }
    }

    /// Makes a record read as abandoned (claimed at the epoch): the next request takes it over
    /// at once, with its planned id.
    static let abandon: BSONDocument = ["$set": ["claimedAt": .datetime(0)]]

    /// Matches one claim exactly: its key and the time it was claimed.
    static func ownClaim(_ claim: ClaimRef) -> BSONDocument {
        ["_id": .string(claim.id), "claimedAt": .datetime(claim.claimedAt.milliseconds)]
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

    /// Tagged whole: a copy is one key, in a slot of its own.
    static func redisKey(_ id: String) -> String { "idem:{\(id)}" }
}

extension BSONDocument {
    func removing(_ key: String) -> BSONDocument {
        var copy = self
        copy[key] = nil
        return copy
    }
}
