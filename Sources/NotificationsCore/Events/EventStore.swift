public import MongoStore

/// An event's claim, which is also its fan-out's progress (`events`, `_id` = `scope:eventId`).
public struct EventRecord: Sendable, Equatable {
    public var key: String
    public var eventId: String
    public var event: NewEvent
    /// `in_progress` or `completed`.
    public var status: String
    public var created: Int
    /// Index of the next batch to write.
    public var batch: Int
    /// Where the next batch starts: an index into `userIds`, or the last follower id done.
    public var cursor: BSONValue
    /// Set when the batch at `batch` has begun writing: its notifications' time. A record read
    /// with it set means that batch was interrupted and is written again with the same time.
    public var batchTime: Timestamp?
    /// Set with `batchTime`: the cursor after the batch in flight, so a resumed batch covers
    /// exactly the recipients its first run covered (the followers between `cursor` and it,
    /// whoever followed meanwhile), not a page read afresh.
    public var batchEnd: BSONValue?
    public var leaseToken: String
    public var leaseUntil: Timestamp
    public var createdAt: Timestamp
    public var expiresAt: Timestamp

    var lease: JobLease { JobLease(key: key, token: leaseToken, batch: batch) }
}

/// The `events` collection: exactly-once claims and fenced progress of fan-outs (`LeasedJobs`).
public struct EventStore: Sendable {
    let events: MongoCollection
    /// The fan-outs' leases and progress, as for every resumable background work.
    let jobs: LeasedJobs

    public init(pool: MongoClientPool) {
        events = pool.collection("events")
        jobs = LeasedJobs(collection: events, countField: "created")
    }

    public func createIndexes() async throws {
        try await mongoOperation {
            try await events.createIndexes([
                .init(name: "expires", keys: ["expiresAt": 1], expireAfterSeconds: 0),
                LeasedJobs.leaseIndex,
            ])
        }
    }

    public enum Claim: Sendable {
        case claimed
        /// The event id was used before (and is still remembered).
        case existing(EventRecord)
    }

    /// Inserts the claim; an existing, unexpired record wins. An expired one is replaced.
    func claim(_ record: EventRecord, now: Timestamp) async throws -> Claim {
        let document = Self.document(record)
        return try await mongoOperation {
            do {
                try await events.insertOne(document)
                return .claimed
            } catch MongoError.duplicateKey {
                guard let existing = try await events.findOne(["_id": .string(record.key)]).flatMap(Self.record) else {
                    // Removed between the insert and the read (expired): try once more.
                    try await events.insertOne(document)
                    return .claimed
                }
                guard existing.expiresAt <= now else { return .existing(existing) }
                let replaced = try await events.findAndModify(
                    ["_id": .string(record.key), "createdAt": .datetime(existing.createdAt.milliseconds)],
                    update: ["$set": .document(document.removing("_id"))])
                return replaced == nil ? .existing(existing) : .claimed
            }
        }
    }

    func find(key: String) async throws -> EventRecord? {
        try await mongoOperation { try await events.findOne(["_id": .string(key)]).flatMap(Self.record) }
    }

    /// Fixes the batch's time and exact range and renews the lease, if the lease is still ours.
    func startBatch(_ record: EventRecord, time: Timestamp, end: BSONValue, leaseUntil: Timestamp) async throws -> Bool {
        try await mongoOperation {
            try await jobs.startBatch(record.lease, end: end, leaseUntil: leaseUntil, also: ["batchTime": .datetime(time.milliseconds)])
        }
    }

    /// Extends the lease of the batch in flight, if the lease is still ours.
    func renewLease(_ record: EventRecord, until leaseUntil: Timestamp) async throws -> Bool {
        try await mongoOperation { try await jobs.renew(record.lease, until: leaseUntil) }
    }

    /// Records a written batch: the next cursor, the count, no batch in flight.
    func finishBatch(_ record: EventRecord, cursor: BSONValue, created: Int, leaseUntil: Timestamp) async throws -> Bool {
        try await mongoOperation {
            try await jobs.finishBatch(record.lease, cursor: cursor, count: created, leaseUntil: leaseUntil, also: ["batchTime": .null])
        }
    }

    func complete(_ record: EventRecord, at time: Timestamp) async throws -> Bool {
        try await mongoOperation { try await jobs.complete(record.lease, at: time, also: ["batchTime": .null]) }
    }

    // MARK: Mapping, explicit in both directions

    static func document(_ record: EventRecord) -> BSONDocument {
        let audience: BSONDocument = switch record.event.audience {
        case .userIDs(let ids): ["userIds": .array(ids.map(BSONValue.string))]
        case .followersOf(let user): ["followersOf": .string(user)]
        }
        return [
            "_id": .string(record.key), "eventId": .string(record.eventId), "type": .string(record.event.type),
            "actorId": .string(record.event.actorId), "title": record.event.title.map(BSONValue.string) ?? .null,
            "body": record.event.body.map(BSONValue.string) ?? .null, "data": .string(record.event.dataJSON), "audience": .document(audience),
            // `expiresAt` is the record's own retention; this is the notifications'.
            "notificationsExpireAt": record.event.expiresAt.map { .datetime($0.milliseconds) } ?? .null,
            "status": .string(record.status), "created": .int64(Int64(record.created)), "batch": .int64(Int64(record.batch)),
            "cursor": record.cursor, "batchTime": record.batchTime.map { .datetime($0.milliseconds) } ?? .null, "batchEnd": record.batchEnd ?? .null,
            "leaseToken": .string(record.leaseToken), "leaseUntil": .datetime(record.leaseUntil.milliseconds),
            "createdAt": .datetime(record.createdAt.milliseconds), "expiresAt": .datetime(record.expiresAt.milliseconds),
        ]
    }

    static func record(_ document: BSONDocument) -> EventRecord? {
        guard let key = document["_id"]?.string, let eventId = document["eventId"]?.string, let type = document["type"]?.string,
            let actorId = document["actorId"]?.string, let audienceDocument = document["audience"]?.document,
            let status = document["status"]?.string, let createdAt = document["createdAt"]?.datetime
        else { return nil }
        let audience: Audience
        if let user = audienceDocument["followersOf"]?.string {
            audience = .followersOf(user)
        } else {
            audience = .userIDs(audienceDocument["userIds"]?.array?.compactMap(\.string) ?? [])
        }
        let event = NewEvent(
            id: eventId, type: type, actorId: actorId, audience: audience, title: document["title"]?.string, body: document["body"]?.string,
            dataJSON: document["data"]?.string ?? "{}", expiresAt: document["notificationsExpireAt"]?.datetime.map(Timestamp.init(milliseconds:)))
        return EventRecord(
            key: key, eventId: eventId, event: event, status: status, created: Int(document["created"]?.int64 ?? 0),
            batch: Int(document["batch"]?.int64 ?? 0), cursor: document["cursor"] ?? .null,
            batchTime: document["batchTime"]?.datetime.map(Timestamp.init(milliseconds:)),
            batchEnd: document["batchEnd"].flatMap { $0.isNull ? nil : $0 }, leaseToken: document["leaseToken"]?.string ?? "",
            leaseUntil: Timestamp(milliseconds: document["leaseUntil"]?.datetime ?? 0), createdAt: Timestamp(milliseconds: createdAt),
            expiresAt: Timestamp(milliseconds: document["expiresAt"]?.datetime ?? .max))
    }
}
