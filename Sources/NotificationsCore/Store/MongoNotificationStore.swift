public import Logging
public import MongoStore

/// Notifications in MongoDB.
///
/// Collections: `notifications` (one document per notification, `_id` a time-ordered
/// ObjectId, indexed on `(recipientId, _id desc)`; every feed query sorts on that index so
/// servers that only use an index for a sorted query use it) and `user_counters` (one
/// document per user holding the unread count, so no read ever runs a count query).
///
/// The notification document is the commit point of every write; the counter follows it
/// (`UserCounters`). Every write that changes unread counts is announced on the counters
/// before it is sent and settled after it, so a write whose outcome is unknown (timed out,
/// connection lost: the server may still apply it), or whose instance died, is made harmless
/// by whichever instance resolves its announcement: what a create inserted is deleted, and
/// the counters are recounted.
public struct MongoNotificationStore: NotificationStore {
    let notifications: MongoCollection
    let pool: MongoClientPool
    let logger: Logger
    let counters: UserCounters
    let clock: any WallClock
    let metrics: ServiceMetrics

    /// - Parameter counterRepaired: called when a user's counter was marked for a recount in the
    ///   background (the feed cache drops that user's entries).
    public init(
        pool: MongoClientPool, metrics: ServiceMetrics, logger: Logger, clock: any WallClock = SystemWallClock(),
        counterRepaired: @escaping @Sendable ([String]) async -> Void = { _ in }
    ) {
        self.pool = pool
        self.clock = clock
        self.metrics = metrics
        self.logger = logger
        let notifications = pool.collection("notifications")
        self.notifications = notifications
        self.counters = UserCounters(
            notifications: notifications, counters: pool.collection("user_counters"),
            timing: WriteTiming(writeDeadline: .milliseconds(pool.operationTimeoutMilliseconds)), metrics: metrics, logger: logger,
            repaired: counterRepaired)
    }

    /// Creates the indexes this store relies on (idempotent; run at start-up and by `create-indexes`).
    public func createIndexes() async throws {
        try await mongoOperation {
            try await notifications.createIndexes([
                .init(name: "recipient_feed", keys: ["recipientId": 1, "_id": -1]),
                // Streams' checks and polls: what was written lately, whatever its id's time.
                .init(name: "recipient_written", keys: ["recipientId": 1, "writtenAt": 1]),
                // Resolving an unsettled create: its documents, by recipient and run.
                .init(name: "recipient_run", keys: ["recipientId": 1, "run": 1]),
                // Feed filters: `sc` is the state class (StateClass.code); a filter is points on it.
                .init(name: "recipient_class", keys: ["recipientId": 1, "sc": 1, "_id": -1]),
                .init(name: "recipient_type_class", keys: ["recipientId": 1, "type": 1, "sc": 1, "_id": -1]),
                // The retention remover: what expired, earliest first. Not a TTL index: a server
                // deleting on its own would leave the counts behind.
                .init(name: "expires", keys: ["expiresAt": 1]),
            ])
            try await addStateClasses()
            // The sweep of unsettled announcements reads only counters that have some.
            try await counters.counters.createIndexes([
                .init(name: "inflight", keys: ["inflight": 1]),
                // The remover's users over the cap (`usersPossiblyOver`).
                .init(name: "total", keys: ["total": 1]), .init(name: "archived", keys: ["archived": 1]),
            ])
        }
    }

    /// Documents stored before `sc` existed get it, one command per class, once: a marker in
    /// `migrations` says it was done, so later start-ups scan nothing. Later writes keep `sc`
    /// with the state fields they set. (An instance of an older version still running during
    /// an upgrade writes documents without it; run `create-indexes` again after the upgrade.)
    private func addStateClasses() async throws(MongoError) {
        let migrations = pool.collection("migrations")
        guard try await migrations.findOne(["_id": "state_class"]) == nil else { return }
        for stateClass in StateClass.allCases {
            var filter = stateClass.filter
            filter["sc"] = ["$exists": false]
            _ = try await notifications.update(filter, ["$set": ["sc": .int32(stateClass.code)]], multi: true)
        }
        do {
            try await migrations.insertOne(["_id": "state_class", "at": .datetime(clock.now().milliseconds)])
        } catch .duplicateKey {
            // Another instance finished it too.
        }
    }

    static let feedSort: BSONDocument = ["recipientId": 1, "_id": -1]

    public var writeTimeout: Duration { .milliseconds(pool.operationTimeoutMilliseconds) }

    public func notificationsPerInsert(like sample: Notification) async throws -> Int {
        let limits = try await mongoOperation { try await pool.writeLimits() }
        // Sized with the longest recipient id there can be, so every recipient's document fits.
        var widest = sample
        widest.recipientId = String(repeating: "x", count: Validation.maxUserIDLength)
        return limits.itemsPerCommand(itemSize: Self.document(widest).encodedSize)
    }

    /// Writes concurrent creates and fan-out batches together (group commit, `NotificationWriter`):
    /// the creates announced on their counters, one unordered insert, then the counters in a
    /// constant number of commands. Each gets its own answer: one that fails fails alone; when
    /// the insert's outcome is unknown (timed out, connection lost), or the creates' counters
    /// could not be settled, every create of the write fails, and what it may have stored is
    /// deleted again by whoever resolves the announcement (this instance, or any other's sweep
    /// if this one dies), by this write's run token.
    public func insert(creates: [Notification], batches: [FanoutBatch], within timeout: Duration) async -> InsertAnswers {
        // This write's token: its creates' documents carry it as `run`, and their counters' announcement as its key.
        let run = UserCounters.newToken()
        // When this write was sent: a stream's check finds it by this, whatever its id's time
        // (a resumed fan-out batch keeps the ids, and so the time, its first run planned).
        let writtenAt = BSONValue.datetime(SystemWallClock().now().milliseconds)
        let createDocuments = creates.map { notification in
            var document = Self.document(notification)
            document["run"] = .string(run)
            document["writtenAt"] = writtenAt
            return document
        }
        let documents = createDocuments + batches.flatMap { batch in
            batch.notifications.map { notification in
                var document = Self.document(notification)
                document["writtenAt"] = writtenAt
                return document
            }
        }
        func failAll(_ error: any Error) -> InsertAnswers {
            InsertAnswers(creates: creates.map { _ in .failure(error) }, batches: batches.map { _ in .failure(error) })
        }
        guard !documents.isEmpty else {
            // A resumed batch none of whose candidates is eligible now: its first run's counts are redone.
            var answers: [Result<[Notification], any Error>] = []
            for batch in batches {
                do throws(MongoError) {
                    try await counters.markStaleMany(batch.candidates, marker: batch.marker)
                    answers.append(.success([]))
                } catch {
                    answers.append(.failure(StoreError(error)))
                }
            }
            return InsertAnswers(creates: [], batches: answers)
        }
        let recipients = Array(Set(creates.map(\.recipientId)))
        // Before the insert, within the write's one budget: the counters the batches' `$inc`
        // needs exist, and the creates are announced on theirs. Nothing is written if this fails.
        let started = ContinuousClock.now
        func left() -> Duration { max(.milliseconds(1), timeout - (ContinuousClock.now - started)) }
        do throws(MongoError) {
            let batchRecipients = batches.flatMap { $0.notifications.map(\.recipientId) }
            if !batchRecipients.isEmpty { try await counters.ensureCounters(batchRecipients, within: left()) }
            try await counters.announce(recipients, token: run, inserts: true, within: left())
        } catch {
            // The announcement may land late: resolved like any other.
            if error.isUnavailable { counters.owe(recipients, token: run, inserts: true) }
            return failAll(StoreError(error))
        }
        let errors: [Int: MongoError]
        do {
            errors = try await notifications.insertEach(documents, timeout: left())
        } catch {
            // Unknown outcome: the server may still apply it. Creates must not stay (their clients
            // got a 503): resolving the announcement deletes them and recounts. A fan-out batch is
            // resumed later with the same ids; its counters are recounted then. Refused as a
            // whole: nothing was written, the announcement is retired the same way.
            counters.owe(recipients, token: run, inserts: true)
            return failAll(StoreError(error))
        }
        var createAnswers: [Result<(notification: Notification, created: Bool), any Error>] = []
        var changes: [String: Counts] = Dictionary(uniqueKeysWithValues: recipients.map { ($0, Counts()) })
        for (index, notification) in creates.enumerated() {
            switch errors[index] {
            case nil:
                changes[notification.recipientId, default: Counts()] += Counts.of(notification)
                createAnswers.append(.success((notification, true)))
            case .duplicateKey?:
                createAnswers.append(await adopt(createDocuments[index], run: run))
            case let error?:
                createAnswers.append(.failure(StoreError(error)))
            }
        }
        if !recipients.isEmpty {
            var settled = false
            do { settled = try await counters.settle(changes, token: run) } catch {}
            if !settled {
                // Its counters cannot follow it: every create of the write fails, and is deleted again.
                logger.warning("Counters of created notifications could not be settled; the creates are undone", metadata: ["creates": "\(creates.count)"])
                counters.owe(recipients, token: run, inserts: true)
                let failure = StoreError.unavailable("the unread counters could not be updated")
                createAnswers = creates.map { _ in .failure(failure) }
            }
        }
        var batchAnswers: [Result<[Notification], any Error>] = []
        var offset = creates.count
        for batch in batches {
            defer { offset += batch.notifications.count }
            var stored: [Notification] = []
            var earlier: [BSONValue] = []
            var failure: MongoError?
            for (index, notification) in batch.notifications.enumerated() {
                switch errors[offset + index] {
                case nil: stored.append(notification)
                // Stored by an earlier run of this batch (maybe applied late, after that run gave up).
                case .duplicateKey?: earlier.append(ObjectID(hex: notification.id).map(BSONValue.objectID) ?? .string(notification.id))
                case let error?: failure = failure ?? error
                }
            }
            if batch.resumed, failure == nil, !earlier.isEmpty {
                // Whether the earlier run's streams ever heard of them is unknown: written again
                // as of now, streams' checks find them. Best effort: their publish is redone too.
                _ = try? await notifications.update(["_id": ["$in": .array(earlier)]], ["$set": ["writtenAt": writtenAt]], multi: true)
            }
            // Each batch's counters on their own, under the batch's marker: its `+1`s land once
            // per user, whichever run (or a frozen owner woken late) sends them. A batch whose
            // counters fail fails: the event's record owes it, and its resume recounts.
            do throws(MongoError) {
                if let failure {
                    // Some of it is stored: recounted now (best effort), and the batch is written again later.
                    try? await counters.markStaleMany(batch.notifications.map(\.recipientId))
                    throw failure
                } else if batch.resumed {
                    // Its first run may have counted any candidate (also one who muted since): recount,
                    // and take the batch's `+1` over from that run.
                    try await counters.markStaleMany(batch.candidates + batch.notifications.map(\.recipientId), marker: batch.marker)
                } else {
                    try await counters.incrementMany(stored.map(\.recipientId), marker: batch.marker, ensured: true)
                }
                batchAnswers.append(.success(stored))
            } catch {
                batchAnswers.append(.failure(StoreError(error)))
            }
        }
        return InsertAnswers(creates: createAnswers, batches: batchAnswers)
    }

    /// The id was planned by an earlier run of the same idempotent request, which stored it.
    /// Adopt it, stamping our run: the earlier run's unsettled announcement (if any) then
    /// leaves it, and recounts (a late copy of that run may never have been counted).
    private func adopt(_ document: BSONDocument, run: String) async -> Result<(notification: Notification, created: Bool), any Error> {
        let id = document["_id"] ?? .null
        do {
            guard let stored = try await notifications.findAndModify(["_id": id], update: ["$set": ["run": .string(run)]], returnNew: true)
                .flatMap(Self.notification)
            else { return .failure(StoreError.unavailable("a notification with this id was stored and is gone")) }
            return .success((stored, false))
        } catch {
            return .failure(StoreError(error))
        }
    }

    public func page(recipientId: String, before: String?, limit: Int, filter: FeedFilter) async throws -> [Notification] {
        var query: BSONDocument = ["recipientId": .string(recipientId), "expiresAt": unexpired]
        if let before, let id = ObjectID(hex: before) { query["_id"] = ["$lt": .objectID(id)] }
        // Equality on `type` and points on `sc`, then `_id`: on MongoDB an index on
        // (recipientId, [type,] sc, _id desc) serves every filter in feed order, merging the
        // classes' ranges (see docs/ARCHITECTURE.md, "Feed filters").
        if let type = filter.type { query["type"] = .string(type) }
        let classes = StateClass.matching(filter)
        if classes.count < StateClass.allCases.count { query["sc"] = ["$in": .array(classes.map { .int32($0.code) })] }
        metrics.mongoQuery(.feedPage)
        return try await mongoOperation {
            try await notifications.find(query, sort: Self.feedSort, limit: limit).compactMap(Self.notification)
        }
    }

    /// Matches a notification that has not expired: `expiresAt` null, missing, or later than now.
    /// Every read (pages, resumes, polls, state changes) has it: an expired notification is
    /// gone at once, before the remover deletes it.
    var unexpired: BSONValue { ["$not": ["$lte": .datetime(clock.now().milliseconds)]] }

    public func streamed(recipientIds: [String], since: StreamSince, after: String?, limit: Int) async throws -> [Notification] {
        guard !recipientIds.isEmpty else { return [] }
        // One recipient: equality, which every server serves from the feed index.
        var query: BSONDocument = [
            "recipientId": recipientIds.count == 1 ? .string(recipientIds[0]) : ["$in": .array(recipientIds.map { .string($0) })],
            "expiresAt": unexpired,
        ]
        var idBounds = BSONDocument()
        switch since {
        case .written(let time): query["writtenAt"] = ["$gt": .datetime(time.milliseconds)]
        case .id(let floor): if let id = ObjectID(hex: floor) { idBounds["$gt"] = .objectID(id) }
        }
        // The next page starts after the previous one's last id (never below the floor: it is greater).
        if let after, let id = ObjectID(hex: after) { idBounds["$gt"] = .objectID(id) }
        if !idBounds.fields.isEmpty { query["_id"] = .document(idBounds) }
        return try await mongoOperation {
            try await notifications.find(query, sort: ["_id": 1], limit: limit).compactMap(Self.notification)
        }
    }

    public func counts(recipientIds: [String]) async throws -> [String: Counts] {
        metrics.mongoQuery(.counts)
        return try await mongoOperation { try await counters.counts(recipientIds) }
    }

    public func counts(recipientId: String) async throws -> Counts {
        metrics.mongoQuery(.counts)
        return try await mongoOperation { try await counters.counts(recipientId) }
    }

    public func setState(_ action: StateAction, recipientId: String, id: String, at: Timestamp) async throws -> Notification? {
        guard let objectID = ObjectID(hex: id) else { return nil }
        let filter: BSONDocument = ["_id": .objectID(objectID), "recipientId": .string(recipientId), "expiresAt": unexpired]
        let stored: BSONDocument? = try await countingWrite(recipientId) { () throws(MongoError) in
            // The item's state class, then one update filtered on that class (what the action
            // does is `StateClass.applying`, as for bulk writes): only the request that changes
            // the state counts the change, and `read` sets both times at once. If another
            // request changed the item in between, the update matches nothing: read it again.
            for _ in 0..<Self.stateChangeAttempts {
                guard let current = try await notifications.findOne(filter) else { return (nil, Counts()) }
                let before = StateClass(document: current)
                // A repeat: nothing to change, the stored times are the answer.
                guard let (after, set) = before.applying(action, at: at) else { return (current, Counts()) }
                var query = filter
                for (key, value) in before.filter.fields { query[key] = value }
                if let changed = try await notifications.findAndModify(query, update: ["$set": .document(set)], returnNew: true) {
                    return (changed, after.counts - before.counts)
                }
            }
            throw MongoError.unavailable("the notification kept changing under concurrent requests")
        }
        return stored.flatMap(Self.notification)
    }

    /// How often a state change reads the item again when concurrent requests keep changing it.
    static let stateChangeAttempts = 5

    public func bulk(_ action: BulkAction, recipientId: String, ids: [String], at: Timestamp) async throws -> Int {
        let scope: BSONDocument = [
            "recipientId": .string(recipientId), "_id": ["$in": .array(ids.compactMap(ObjectID.init(hex:)).map(BSONValue.objectID))],
        ]
        let changeable = switch action {
        case .delete: StateClass.allCases
        case .state(let state): StateClass.allCases.filter { $0.after(state) != nil }
        }
        return try await countingWrite(recipientId) { () throws(MongoError) in
            // No sort: the ids are points on `_id`, whichever index the server takes.
            try await updateByClass(scope, sort: nil, changeable: changeable, present: nil) { (stateClass, filter) throws(MongoError) in
                switch action {
                case .delete:
                    let removed = try await notifications.delete(filter, limit: 0)
                    return (removed, Counts() - stateClass.counts * removed)
                case .state(let state):
                    guard let (after, set) = stateClass.applying(state, at: at) else { return (0, Counts()) }
                    let modified = try await notifications.update(filter, ["$set": .document(set)], multi: true).modified
                    return (modified, (after.counts - stateClass.counts) * modified)
                }
            }
        }
    }

    /// A bulk write as one statement per state class (`write`, given the class and the filter of
    /// `scope`'s notifications in it), so that what each changed is counted exactly from its
    /// count alone. It starts from what is `present` in the scope (the classes found and how many
    /// notifications; one query for them when nil) and goes in `StateClass.updateOrder`; when no
    /// order is safe against concurrent class changes and its updates changed fewer than it found
    /// (one moved between classes meanwhile), it looks again and goes over what is left, at most
    /// `classRounds` times (beyond that only a request changing the same items non-stop escapes).
    /// Returns how many it changed and the change to the counts.
    func updateByClass(
        _ scope: BSONDocument, sort: BSONDocument?, changeable: [StateClass], present: (classes: Set<StateClass>, count: Int)?,
        _ write: (StateClass, BSONDocument) async throws(MongoError) -> (Int, Counts)
    ) async throws(MongoError) -> (Int, Counts) {
        func look() async throws(MongoError) -> (classes: Set<StateClass>, count: Int) {
            var filter = scope
            filter["sc"] = ["$in": .array(changeable.map { .int32($0.code) })]
            let found = try await notifications.find(filter, sort: sort, projection: ["_id": 0, "sc": 1])
            return (Set(found.compactMap { $0["sc"]?.int64.flatMap(StateClass.init(code:)) }), found.count)
        }
        var left: (classes: Set<StateClass>, count: Int)
        if let present { left = present } else { left = try await look() }
        var changed = 0
        var change = Counts()
        for round in 1...Self.classRounds where !left.classes.isEmpty {
            let order = StateClass.updateOrder(changeable: changeable, present: left.classes)
            var changedThisRound = 0
            for stateClass in order ?? changeable.filter(left.classes.contains) {
                var filter = scope
                for (key, value) in stateClass.filter.fields { filter[key] = value }
                let (count, classChange) = try await write(stateClass, filter)
                changedThisRound += count
                change += classChange
            }
            changed += changedThisRound
            guard order == nil, round < Self.classRounds, changedThisRound < left.count else { break }
            left = try await look()
        }
        return (changed, change)
    }

    /// How often `updateByClass` goes over what concurrent class changes left behind.
    static let classRounds = 3

    public func delete(recipientId: String, id: String) async throws -> Bool {
        guard let objectID = ObjectID(hex: id) else { return false }
        return try await countingWrite(recipientId) { () throws(MongoError) in
            let removed = try await notifications.findAndModify(["_id": .objectID(objectID), "recipientId": .string(recipientId)], remove: true)
            return (removed != nil, removed.map { Counts() - Counts.of(document: $0) } ?? Counts())
        }
    }

    /// A write that changes the user's counts by the change it returns: announced
    /// on the counter before it is sent, settled after. When the write's outcome (or its
    /// settle's) is unknown, or the instance dies before settling, the announcement is resolved
    /// (the counter recounted) by this instance or by any instance's sweep.
    func countingWrite<T>(_ user: String, _ write: () async throws(MongoError) -> (T, change: Counts)) async throws -> T {
        do throws(MongoError) {
            return try await countingWrite([user]) { () throws(MongoError) in
                let (result, change) = try await write()
                return (result, [user: change], [])
            }
        } catch {
            throw StoreError(error)
        }
    }

    /// A counting write over several users' counters (`countingWrite(_:_:)`): the write returns
    /// each user's change, and the users whose change it could not know (they are recounted).
    func countingWrite<T>(
        _ users: [String], _ write: () async throws(MongoError) -> (T, changes: [String: Counts], unsure: Set<String>)
    ) async throws(MongoError) -> T {
        let token = UserCounters.newToken()
        do {
            try await counters.announce(users, token: token, inserts: false)
        } catch {
            if error.isUnavailable { counters.owe(users, token: token, inserts: false) }
            throw error
        }
        let (result, changes, unsure): (T, [String: Counts], Set<String>)
        do {
            (result, changes, unsure) = try await write()
        } catch {
            counters.owe(users, token: token, inserts: false)
            throw error
        }
        if !unsure.isEmpty { counters.owe(Array(unsure), token: token, inserts: false) }
        // The write is done: a counter that cannot follow it is recounted instead.
        let exact = changes.filter { !unsure.contains($0.key) }
        if (try? await counters.settle(exact, token: token)) != true {
            logger.warning("Counter update failed; it will be recounted", metadata: ["users": "\(exact.keys.sorted().prefix(5))"])
            counters.owe(Array(exact.keys), token: token, inserts: false)
        }
        return result
    }

    // MARK: Mapping, explicit in both directions

    static func document(_ notification: Notification) -> BSONDocument {
        [
            "_id": ObjectID(hex: notification.id).map(BSONValue.objectID) ?? .string(notification.id),
            "recipientId": .string(notification.recipientId),
            "type": .string(notification.type),
            "actorId": notification.actorId.map(BSONValue.string) ?? .null,
            "title": notification.title.map(BSONValue.string) ?? .null,
            "body": notification.body.map(BSONValue.string) ?? .null,
            "data": .string(notification.dataJSON),
            "createdAt": .datetime(notification.createdAt.milliseconds),
            "readAt": notification.readAt.map { .datetime($0.milliseconds) } ?? .null,
            "seenAt": notification.seenAt.map { .datetime($0.milliseconds) } ?? .null,
            "archivedAt": notification.archivedAt.map { .datetime($0.milliseconds) } ?? .null,
            "expiresAt": notification.expiresAt.map { .datetime($0.milliseconds) } ?? .null,
            "sc": .int32(
                StateClass(archived: notification.archivedAt != nil, read: notification.readAt != nil, seen: notification.seenAt != nil).code),
        ]
    }

    static func notification(_ document: BSONDocument) -> Notification? {
        guard let id = document["_id"]?.objectID, let recipientId = document["recipientId"]?.string,
            let type = document["type"]?.string, let createdAt = document["createdAt"]?.datetime
        else { return nil }
        return Notification(
            id: id.description, recipientId: recipientId, type: type, actorId: document["actorId"]?.string,
            title: document["title"]?.string, body: document["body"]?.string, dataJSON: document["data"]?.string ?? "{}",
            createdAt: Timestamp(milliseconds: createdAt), readAt: document["readAt"]?.datetime.map(Timestamp.init(milliseconds:)),
            seenAt: document["seenAt"]?.datetime.map(Timestamp.init(milliseconds:)),
            archivedAt: document["archivedAt"]?.datetime.map(Timestamp.init(milliseconds:)),
            expiresAt: document["expiresAt"]?.datetime.map(Timestamp.init(milliseconds:)))
    }
}
