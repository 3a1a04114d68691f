public import NIOCore

/// Typed operations on one collection, expressed as MongoDB commands.
///
/// Writes go through the command interface and read their counts from the raw reply with
/// `BSONValue.int64`, which accepts int32, int64 and double (servers differ). Write errors
/// in a reply are mapped here: a unique-index violation is `MongoError.duplicateKey`.
public struct MongoCollection: Sendable {
    let pool: MongoClientPool
    public let name: String

    public struct InsertResult: Sendable, Equatable {
        public var inserted: Int
        /// Positions (in the submitted order) of documents a unique index rejected.
        public var duplicateIndexes: [Int]
    }

    public struct UpdateResult: Sendable, Equatable {
        public var matched: Int
        public var modified: Int
        public var upserted: Int
    }

    public struct IndexModel: Sendable {
        public var name: String
        public var keys: BSONDocument
        public var unique: Bool
        public var expireAfterSeconds: Int32?

        public init(name: String, keys: BSONDocument, unique: Bool = false, expireAfterSeconds: Int32? = nil) {
            self.name = name
            self.keys = keys
            self.unique = unique
            self.expireAfterSeconds = expireAfterSeconds
        }
    }

    /// Inserts documents, in as many commands as the server's limits require (`WriteLimits`).
    /// Duplicates are reported, not thrown, so a batch can be retried safely; `insertOne`
    /// throws them instead.
    /// - Parameter timeout: the call's deadline, when shorter than the operation timeout.
    public func insert(_ documents: [BSONDocument], ordered: Bool = false, timeout: Duration? = nil) async throws(MongoError) -> InsertResult {
        guard !documents.isEmpty else { return InsertResult(inserted: 0, duplicateIndexes: []) }
        var inserted = 0
        var duplicates: [Int] = []
        let replies = try await pool.runWrite(
            ["insert": .string(name), "ordered": .bool(ordered)], arrayKey: "documents", items: documents, timeout: timeout.map { TimeAmount($0) })
        for (range, reply) in replies {
            let reply = try reply.get()
            duplicates += try Self.writeErrors(reply).map { $0 + range.lowerBound }
            inserted += Int(reply["n"]?.int64 ?? 0)
        }
        return InsertResult(inserted: inserted, duplicateIndexes: duplicates)
    }

    /// An unordered insert whose documents succeed or fail each on their own: the error of each
    /// failed document by its position (`.duplicateKey` or `.server`; a command the server
    /// refused as a whole fails each of its documents). It is split into as many commands as
    /// the server's limits require. Only an unknown outcome (server unreachable, timeout) throws.
    /// - Parameter timeout: the call's deadline, when shorter than the operation timeout.
    public func insertEach(_ documents: [BSONDocument], timeout: Duration? = nil) async throws(MongoError) -> [Int: MongoError] {
        guard !documents.isEmpty else { return [:] }
        var errors: [Int: MongoError] = [:]
        let replies = try await pool.runWrite(
            ["insert": .string(name), "ordered": false], arrayKey: "documents", items: documents, timeout: timeout.map { TimeAmount($0) })
        for (range, reply) in replies {
            switch reply {
            case .success(let reply):
                for (index, error) in Self.errorsByPosition(reply) { errors[range.lowerBound + index] = error }
            case .failure(let error):
                for index in range { errors[index] = error }
            }
        }
        return errors
    }

    public func insertOne(_ document: BSONDocument) async throws(MongoError) {
        let result = try await insert([document], ordered: true)
        if !result.duplicateIndexes.isEmpty { throw .duplicateKey("\(name)") }
    }

    /// - Parameter timeout: the call's deadline, when shorter than the operation timeout.
    public func find(
        _ filter: BSONDocument, sort: BSONDocument? = nil, skip: Int? = nil, limit: Int? = nil, projection: BSONDocument? = nil,
        timeout: Duration? = nil
    ) async throws(MongoError) -> [BSONDocument] {
        var options = BSONDocument()
        if let sort { options["sort"] = .document(sort) }
        if let skip { options["skip"] = .int64(Int64(skip)) }
        if let limit { options["limit"] = .int64(Int64(limit)) }
        if let projection { options["projection"] = .document(projection) }
        return try await pool.find(collection: name, filter: filter, options: options, timeout: timeout.map { TimeAmount($0) })
    }

    public func findOne(_ filter: BSONDocument) async throws(MongoError) -> BSONDocument? {
        try await find(filter, limit: 1).first
    }

    /// One statement of an `update` command.
    public struct UpdateStatement: Sendable {
        public var filter: BSONDocument
        public var update: BSONDocument
        public var multi: Bool
        public var upsert: Bool

        public init(filter: BSONDocument, update: BSONDocument, multi: Bool = false, upsert: Bool = false) {
            self.filter = filter
            self.update = update
            self.multi = multi
            self.upsert = upsert
        }
    }

    public func update(
        _ filter: BSONDocument, _ update: BSONDocument, multi: Bool = false, upsert: Bool = false, timeout: Duration? = nil
    ) async throws(MongoError) -> UpdateResult {
        try await self.update([UpdateStatement(filter: filter, update: update, multi: multi, upsert: upsert)], timeout: timeout)
    }

    /// Statements of one `update` command (one round trip, unless the server's limits split
    /// it); counts are their sums.
    public func update(_ statements: [UpdateStatement], timeout: Duration? = nil) async throws(MongoError) -> UpdateResult {
        guard !statements.isEmpty else { return UpdateResult(matched: 0, modified: 0, upserted: 0) }
        let documents = statements.map { statement -> BSONDocument in
            [
                "q": .document(statement.filter), "u": .document(statement.update), "multi": .bool(statement.multi),
                "upsert": .bool(statement.upsert),
            ]
        }
        var result = UpdateResult(matched: 0, modified: 0, upserted: 0)
        for (_, reply) in try await pool.runWrite(["update": .string(name)], arrayKey: "updates", items: documents, timeout: timeout.map { TimeAmount($0) }) {
            let reply = try reply.get()
            let duplicates = try Self.writeErrors(reply)
            if !duplicates.isEmpty { throw .duplicateKey(name) }
            let upserted = reply["upserted"]?.array?.count ?? 0
            result.matched += Int(reply["n"]?.int64 ?? 0) - upserted
            result.modified += Int(reply["nModified"]?.int64 ?? 0)
            result.upserted += upserted
        }
        return result
    }

    /// Deletes up to one (`limit: 1`) or all (`limit: 0`) matching documents; returns how many.
    public func delete(_ filter: BSONDocument, limit: Int) async throws(MongoError) -> Int {
        let reply = try await pool.runCommand([
            "delete": .string(name), "deletes": .array([.document(["q": .document(filter), "limit": .int32(Int32(limit))])]),
        ])
        _ = try Self.writeErrors(reply)
        return Int(reply["n"]?.int64 ?? 0)
    }

    /// `findAndModify`: updates (or removes) one document and returns it (as it was before, or after with `returnNew`).
    public func findAndModify(
        _ filter: BSONDocument, update: BSONDocument? = nil, remove: Bool = false, returnNew: Bool = false
    ) async throws(MongoError) -> BSONDocument? {
        var command: BSONDocument = ["findAndModify": .string(name), "query": .document(filter)]
        if remove { command["remove"] = true }
        if let update {
            command["update"] = .document(update)
            command["new"] = .bool(returnNew)
        }
        let reply = try await pool.runCommand(command)
        return reply["value"]?.document
    }

    public func createIndexes(_ indexes: [IndexModel]) async throws(MongoError) {
        let models: [BSONValue] = indexes.map { index in
            var model: BSONDocument = ["key": .document(index.keys), "name": .string(index.name)]
            if index.unique { model["unique"] = true }
            if let ttl = index.expireAfterSeconds { model["expireAfterSeconds"] = .int32(ttl) }
            return .document(model)
        }
        _ = try await pool.runCommand(["createIndexes": .string(name), "indexes": .array(models)])
    }

    /// The write errors of a reply by the position of the document or statement they concern:
    /// `.duplicateKey` for a unique-index violation, `.server` for any other.
    private static func errorsByPosition(_ reply: BSONDocument) -> [Int: MongoError] {
        var errors: [Int: MongoError] = [:]
        for case .document(let error) in reply["writeErrors"]?.array ?? [] {
            let code = Int(error["code"]?.int64 ?? 0)
            let message = error["errmsg"]?.string ?? "write error"
            errors[Int(error["index"]?.int64 ?? 0)] =
                MongoError.duplicateKeyCodes.contains(code) ? .duplicateKey(message) : .server(code: code, message: message)
        }
        return errors
    }

    /// Returns the positions of duplicate-key write errors, in order; any other write error throws.
    private static func writeErrors(_ reply: BSONDocument) throws(MongoError) -> [Int] {
        let errors = errorsByPosition(reply)
        if let other = errors.sorted(by: { $0.key < $1.key }).first(where: { if case .duplicateKey = $0.value { false } else { true } }) {
            throw other.value
        }
        return errors.keys.sorted()
    }
}

extension MongoClientPool {
    /// `ping`: true when a server answers within `timeout` (default: the operation deadline).
    public func ping(timeout: TimeAmount? = nil) async -> Bool {
        (try? await runCommand(["ping": .int32(1)], timeout: timeout, bounded: false))?["ok"]?.int64 == 1
    }
}
