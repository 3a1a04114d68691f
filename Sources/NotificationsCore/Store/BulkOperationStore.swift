public import MongoStore

/// An all-at-once operation gone to the background (`POST …/read-all` and the like past
/// `BULK_SYNC_LIMIT`): its record in `bulk_operations`, which is also its progress.
public struct BulkOperation: Sendable, Equatable {
    public var id: String
    public var scope: AllAtOnceScope
    /// `in_progress` or `completed`.
    public var status: String
    public var updated: Int
    /// Index of the next batch.
    public var batch: Int
    /// Ids below this remain: the exclusive upper end of the next batch.
    public var cursor: ObjectID
    /// Set while a batch is in flight: its lower end (`ObjectID.zero`: down to the first). A
    /// record read with it set was interrupted; that batch is run again over the same range.
    public var batchEnd: ObjectID?
    /// The request's time: every batch sets it as `readAt`, `seenAt` or `archivedAt`.
    public var time: Timestamp
    public var leaseToken: String
    public var leaseUntil: Timestamp
    public var createdAt: Timestamp
    public var expiresAt: Timestamp

    var lease: JobLease { JobLease(key: id, token: leaseToken, batch: batch) }

    /// `seen-all`, `read-all`, `archive-all`.
    public var actionName: String { "\(scope.action.rawValue)-all" }
}

extension ObjectID {
    /// The smallest id: a range's lower end that excludes nothing.
    static let zero = ObjectID.make(milliseconds: 0, tail: [0, 0, 0, 0, 0, 0])
}

/// The `bulk_operations` collection: records and fenced progress (`LeasedJobs`).
public struct BulkOperationStore: Sendable {
    let operations: MongoCollection
    let jobs: LeasedJobs

    public init(pool: MongoClientPool) {
        operations = pool.collection("bulk_operations")
        jobs = LeasedJobs(collection: operations, countField: "updated")
    }

    public func createIndexes() async throws {
        try await mongoOperation {
            try await operations.createIndexes([
                .init(name: "expires", keys: ["expiresAt": 1], expireAfterSeconds: 0),
                LeasedJobs.leaseIndex,
            ])
        }
    }

    func insert(_ operation: BulkOperation) async throws {
        try await mongoOperation { try await operations.insertOne(Self.document(operation)) }
    }

    func find(id: String) async throws -> BulkOperation? {
        try await mongoOperation { try await operations.findOne(["_id": .string(id)]).flatMap(Self.operation) }
    }

    // MARK: Mapping, explicit in both directions

    static func document(_ operation: BulkOperation) -> BSONDocument {
        [
            "_id": .string(operation.id), "userId": .string(operation.scope.recipientId), "action": .string(operation.scope.action.rawValue),
            "type": operation.scope.type.map(BSONValue.string) ?? .null, "status": .string(operation.status),
            "updated": .int64(Int64(operation.updated)), "batch": .int64(Int64(operation.batch)), "cursor": .objectID(operation.cursor),
            "batchEnd": operation.batchEnd.map(BSONValue.objectID) ?? .null, "time": .datetime(operation.time.milliseconds),
            "leaseToken": .string(operation.leaseToken), "leaseUntil": .datetime(operation.leaseUntil.milliseconds),
            "createdAt": .datetime(operation.createdAt.milliseconds), "expiresAt": .datetime(operation.expiresAt.milliseconds),
        ]
    }

    static func operation(_ document: BSONDocument) -> BulkOperation? {
        guard let id = document["_id"]?.string, let user = document["userId"]?.string,
            let action = document["action"]?.string.flatMap(StateAction.init(rawValue:)), let status = document["status"]?.string,
            let cursor = document["cursor"]?.objectID, let time = document["time"]?.datetime, let createdAt = document["createdAt"]?.datetime
        else { return nil }
        return BulkOperation(
            id: id, scope: AllAtOnceScope(recipientId: user, action: action, type: document["type"]?.string), status: status,
            updated: Int(document["updated"]?.int64 ?? 0), batch: Int(document["batch"]?.int64 ?? 0), cursor: cursor,
            batchEnd: document["batchEnd"]?.objectID, time: Timestamp(milliseconds: time), leaseToken: document["leaseToken"]?.string ?? "",
            leaseUntil: Timestamp(milliseconds: document["leaseUntil"]?.datetime ?? 0), createdAt: Timestamp(milliseconds: createdAt),
            expiresAt: Timestamp(milliseconds: document["expiresAt"]?.datetime ?? .max))
    }
}
