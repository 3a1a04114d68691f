private import CMongoc
internal import Resilience
#if canImport(Glibc)
private import Glibc
#endif
public import NIOCore
internal import NIOPosix

/// One `mongoc_client_pool_t`, and the thread pool every libmongoc call runs on.
///
/// libmongoc blocks, so no call may run on an event loop: each one hops to `threadPool`,
/// which has as many threads as the client pool has clients (so `pop` never waits). Every
/// call also has an async-side deadline, so a frozen server answers callers in time even
/// if the blocked thread is still waiting for its socket timeout.
///
/// The work waiting for a thread is bounded (`queueCapacity`): beyond it a call fails at once
/// with `.overloaded` instead of queueing behind a slow or frozen server without limit.
public final class MongoClientPool: Sendable {
    nonisolated(unsafe) private let pool: OpaquePointer
    nonisolated(unsafe) private let uri: OpaquePointer
    public let databaseName: String
    public let maxPoolSize: Int
    private let threadPool: NIOThreadPool
    /// Calls queued or running on `threadPool`; a slot is held until the thread is done with it,
    /// not only until its caller gives up, so the bound is on real work.
    private let work: Bulkhead
    private let eventLoopGroup: any EventLoopGroup
    public let operationTimeout: TimeAmount
    public var operationTimeoutMilliseconds: Int64 { operationTimeout.nanoseconds / 1_000_000 }

    /// Initialises libmongoc once and silences its own stderr logger: failures reach our logs as typed errors.
    private static let initialize: Void = {
        mongoc_init()
        mongoc_log_set_handler(nil, nil)
    }()

    /// - Parameters:
    ///   - uriString: `MONGODB_URI`; its database is the one used, `maxPoolSize` sizes the pool.
    ///   - operationTimeoutMilliseconds: applied as server selection, connect and socket timeouts
    ///     unless the URI sets them, and as the deadline of every call.
    ///   - queueCapacity: calls queued or running at once beyond which new ones fail with
    ///     `.overloaded`; by default 16 per thread and at least 256 (a small pool, as against the
    ///     dev server, must still absorb a burst of requests that each read once).
    public init(
        uriString: String, operationTimeoutMilliseconds: Int64, eventLoopGroup: any EventLoopGroup, queueCapacity: Int? = nil
    ) throws(MongoError) {
        _ = Self.initialize
        var error = bson_error_t()
        guard let uri = mongoc_uri_new_with_error(uriString, &error) else {
            throw .invalidURI(MongoError(error).description)
        }
        let timeout = Int32(clamping: operationTimeoutMilliseconds)
        for option in ["serverSelectionTimeoutMS", "connectTimeoutMS", "socketTimeoutMS"] where !mongoc_uri_has_option(uri, option.lowercased()) {
            _ = mongoc_uri_set_option_as_int32(uri, option, timeout)
        }
        guard let pool = mongoc_client_pool_new(uri) else {
            mongoc_uri_destroy(uri)
            throw .invalidURI("the client pool could not be created")
        }
        mongoc_client_pool_set_error_api(pool, 2)
        _ = mongoc_client_pool_set_appname(pool, "notifications")
        self.uri = uri
        self.pool = pool
        self.databaseName = mongoc_uri_get_database(uri).map { String(cString: $0) } ?? "notifications"
        self.maxPoolSize = Int(mongoc_uri_get_option_as_int32(uri, "maxpoolsize", 100))
        self.operationTimeout = .milliseconds(operationTimeoutMilliseconds)
        self.eventLoopGroup = eventLoopGroup
        let threads = max(1, min(maxPoolSize, 32))
        self.threadPool = NIOThreadPool(numberOfThreads: threads)
        self.work = Bulkhead(capacity: max(1, queueCapacity ?? max(256, threads * 16)))
        self.threadPool.start()
    }

    deinit {
        mongoc_client_pool_destroy(pool)
        mongoc_uri_destroy(uri)
    }

    public func collection(_ name: String) -> MongoCollection {
        MongoCollection(pool: self, name: name)
    }

    /// Calls queued or running now.
    public var queuedOperations: Int { work.inUse }

    /// Runs `body` with a pooled client on the thread pool, within the operation deadline.
    /// - Parameter bounded: false only for health pings, which must tell "MongoDB is down"
    ///   apart from "this instance is busy" even when the queue is full.
    func withClient<T: Sendable>(
        timeout: TimeAmount? = nil, bounded: Bool = true, _ body: @escaping @Sendable (OpaquePointer) throws(MongoError) -> T
    ) async throws(MongoError) -> T {
        if bounded {
            guard work.tryAcquire() else { throw .overloaded }
        }
        let eventLoop = eventLoopGroup.any()
        let promise = eventLoop.makePromise(of: T.self)
        let limit = timeout ?? operationTimeout
        let expiry = NIODeadline.now() + limit
        let deadline = eventLoop.scheduleTask(in: limit) { promise.fail(MongoError.timeout) }
        // The work item holds `self`, so the C pool cannot be destroyed under a running call.
        threadPool.runIfActive(eventLoop: eventLoop) { [self] () throws -> T in
            // Work still queued when its caller has given up never runs: a write the caller was
            // told had failed must not happen later (e.g. when a frozen server comes back).
            guard NIODeadline.now() < expiry else { throw MongoError.timeout }
            guard let client = mongoc_client_pool_pop(pool) else { throw MongoError.unavailable("no client could be created") }
            defer { mongoc_client_pool_push(pool, client) }
            return try body(client)
        }.whenComplete { [work] result in
            if bounded { work.release() }
            deadline.cancel()
            promise.completeWith(result)
        }
        do {
            // A cancelled caller (e.g. a request cut off at the end of the shutdown grace period)
            // stops waiting at once; the blocked thread finishes on its own deadline.
            return try await withTaskCancellationHandler {
                try await promise.futureResult.get()
            } onCancel: {
                promise.fail(MongoError.timeout)
            }
        } catch let error as MongoError {
            throw error
        } catch {
            throw .shutdown
        }
    }

    /// Runs a command on this pool's database and returns the server's reply document.
    public func runCommand(_ command: BSONDocument, timeout: TimeAmount? = nil, bounded: Bool = true) async throws(MongoError) -> BSONDocument {
        let database = databaseName
        let expiry = NIODeadline.now() + (timeout ?? operationTimeout)
        return try await withClient(timeout: timeout, bounded: bounded) { client throws(MongoError) in
            try Self.retryingConflicts(until: expiry) { () throws(MongoError) in try Self.command(command, database: database, client: client) }
        }
    }

    /// One write command (`insert`, `update`) over `items`, sent as as many commands as the
    /// limits of the server it goes to require (`WriteLimits`, from that server's `hello`), in
    /// order, on one client and within one deadline: `command` is the command without its array,
    /// `arrayKey` names the array (`documents`, `updates`). A chunk the server refuses as a whole
    /// is answered with its error and the next chunk is still sent; a chunk whose outcome is
    /// unknown (timeout, connection lost) throws, and no later chunk is sent: the caller treats
    /// the whole write as unknown, as it would a single command. An `ordered` write stops after
    /// the first chunk with a write error, as one ordered command would.
    /// - Parameter maxCount: a smaller cap on items per command than the server's, when wanted.
    public func runWrite(
        _ command: BSONDocument, arrayKey: String, items: [BSONDocument], maxCount: Int? = nil, timeout: TimeAmount? = nil
    ) async throws(MongoError) -> [(range: Range<Int>, reply: Result<BSONDocument, MongoError>)] {
        let database = databaseName
        let expiry = NIODeadline.now() + (timeout ?? operationTimeout)
        return try await withClient(timeout: timeout) { client throws(MongoError) in
            let limits = try Self.writeLimits(client: client)
            let ranges = limits.split(sizes: items.map(\.encodedSize), maxCount: maxCount)
            var replies: [(range: Range<Int>, reply: Result<BSONDocument, MongoError>)] = []
            for range in ranges {
                // The caller has been told the write timed out: send nothing more.
                guard NIODeadline.now() < expiry else { throw MongoError.timeout }
                var chunk = command
                chunk[arrayKey] = .array(items[range].map(BSONValue.document))
                do throws(MongoError) {
                    let reply = try Self.retryingConflicts(until: expiry) { () throws(MongoError) in
                        try Self.command(chunk, database: database, client: client)
                    }
                    replies.append((range, .success(reply)))
                    // An ordered write stops at its first error, across chunks as within one.
                    if command["ordered"]?.bool == true, reply["writeErrors"]?.array?.isEmpty == false { break }
                } catch where error.isUnavailable {
                    throw error
                } catch {
                    replies.append((range, .failure(error)))
                    if command["ordered"]?.bool == true { break }
                }
            }
            return replies
        }
    }

    /// The write limits of the server a command on `client` goes to, from the `hello` reply
    /// libmongoc keeps for it (no round trip); MongoDB's defaults if the reply lacks them.
    static func writeLimits(client: OpaquePointer) throws(MongoError) -> WriteLimits {
        var error = bson_error_t()
        guard let description = mongoc_client_select_server(client, true, nil, &error) else { throw MongoError(error) }
        defer { mongoc_server_description_destroy(description) }
        guard let hello = mongoc_server_description_hello_response(description) else { return .mongoDBDefaults }
        return WriteLimits(hello: OwnedBSON(copying: hello).document)
    }

    /// The limits of the server writes go to now (tests, logs).
    public func writeLimits() async throws(MongoError) -> WriteLimits {
        try await withClient { client throws(MongoError) in try Self.writeLimits(client: client) }
    }

    /// A write conflict (112; the dev server's "database is busy", also on reads) means the
    /// server applied nothing, so retrying is safe: back off briefly a few times (10 ms doubling
    /// to 160 ms, never past the call's deadline; this runs on a pool thread, never on an event
    /// loop) before giving up. Not longer: a busy server with callers holding every pool thread
    /// in retries serves nobody (a fan-out under load slowed from seconds to minutes).
    static func retryingConflicts<T>(until expiry: NIODeadline, _ body: () throws(MongoError) -> T) throws(MongoError) -> T {
        var pause: Int64 = 10_000_000
        var attempt = 0
        while true {
            do throws(MongoError) {
                return try body()
            } catch {
                guard case .server(let code, _) = error, MongoError.writeConflictCodes.contains(code),
                    attempt < 5, NIODeadline.now() + .nanoseconds(pause) < expiry
                else { throw error }
                usleep(UInt32(pause / 1000))
                pause *= 2
                attempt += 1
            }
        }
    }

    static func command(_ command: BSONDocument, database: String, client: OpaquePointer) throws(MongoError) -> BSONDocument {
        // The reply is an out-parameter bson_t, which libmongoc always initialises.
        let replyMemory = UnsafeMutableRawPointer.allocate(byteCount: 128, alignment: 128)
        defer { replyMemory.deallocate() }
        let reply = OpaquePointer(replyMemory)
        var error = bson_error_t()
        let ok = OwnedBSON(command).withPointer { body in mongoc_client_command_simple(client, database, body, nil, reply, &error) }
        defer { bson_destroy(reply) }
        guard ok else { throw MongoError(error) }
        return OwnedBSON(copying: reply).document
    }

    /// Runs a find and drains its cursor (getMore included).
    func find(collection: String, filter: BSONDocument, options: BSONDocument, timeout: TimeAmount? = nil) async throws(MongoError) -> [BSONDocument] {
        let database = databaseName
        let expiry = NIODeadline.now() + (timeout ?? operationTimeout)
        return try await withClient(timeout: timeout) { client throws(MongoError) in
            try Self.retryingConflicts(until: expiry) { () throws(MongoError) in
                try Self.drain(client: client, database: database, collection: collection, filter: filter, options: options)
            }
        }
    }

    private static func drain(
        client: OpaquePointer, database: String, collection: String, filter: BSONDocument, options: BSONDocument
    ) throws(MongoError) -> [BSONDocument] {
        let handle = mongoc_client_get_collection(client, database, collection)!
        defer { mongoc_collection_destroy(handle) }
        // The filter and options stay alive until the cursor is drained and destroyed.
        return try OwnedBSON(filter).withPointer { (filterPointer) throws(MongoError) -> [BSONDocument] in
            try OwnedBSON(options).withPointer { (optionsPointer) throws(MongoError) -> [BSONDocument] in
                let cursor = mongoc_collection_find_with_opts(handle, filterPointer, optionsPointer, nil)!
                defer { mongoc_cursor_destroy(cursor) }
                var documents: [BSONDocument] = []
                var current: OpaquePointer? = nil
                while mongoc_cursor_next(cursor, &current), let current {
                    documents.append(OwnedBSON(copying: current).document)
                }
                var error = bson_error_t()
                if mongoc_cursor_error(cursor, &error) { throw MongoError(error) }
                return documents
            }
        }
    }

    /// Stops the thread pool; call after the last request has finished.
    public func shutdown() async {
        try? await threadPool.shutdownGracefully()
    }

    /// Stops the thread pool, but waits at most `limit` for calls still blocked in libmongoc
    /// (a frozen server can hold one for a whole socket timeout); the process exits anyway.
    public func shutdown(waitingAtMost limit: Duration) async {
        await firstOf({ await self.shutdown() }, orAfter: limit, fallback: ())
    }
}
