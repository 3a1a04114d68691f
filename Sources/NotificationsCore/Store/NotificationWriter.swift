/// The one way notifications are written: single creates and event fan-out batches share one
/// group commit (`GroupCommit`), so whatever arrives while a write is in flight goes out
/// together in the next one: one unordered insert of at most `maxDocuments`, the counters in
/// a constant number of commands, one Redis round trip for the recipients' feed versions and
/// one for the stream messages. A lone request is written at once.
///
/// Each request keeps its own answer: a create that fails fails alone, a fan-out batch with a
/// failed document fails alone (it is resumed later, with the same ids). Answers come back
/// only after the Redis side, so a client that reads after its create returned sees it
/// (read-your-writes), on any instance. The Redis side is out of the serialized path: while
/// one write's invalidation and publish wait on Redis, the next write goes to MongoDB.
public struct NotificationWriter: Sendable {
    enum Request: Sendable {
        case create(Notification)
        /// A fan-out batch (ids derived per recipient, so what is already stored is skipped).
        case fanout(FanoutBatch)

        var notifications: [Notification] {
            switch self {
            case .create(let notification): [notification]
            case .fanout(let batch): batch.notifications
            }
        }
    }

    enum Answer: Sendable {
        case created(Notification, created: Bool)
        /// The batch's notifications this write stored.
        case fannedOut([Notification])
    }

    /// The most documents one write takes (a fan-out batch is at most as large, and goes alone).
    public static let maxDocuments = 1000
    let commit: GroupCommit<Request, Answer>

    let store: any NotificationStore

    public init(store: any NotificationStore, cache: FeedCache, streams: StreamPublisher, metrics: ServiceMetrics) {
        self.store = store
        commit = GroupCommit(
            maxBatch: Self.maxDocuments, budget: store.writeTimeout, weight: { max(1, $0.notifications.count) },
            cancelled: { StoreError.unavailable("cancelled before it was written") },
            expired: { StoreError.unavailable("timed out waiting for a write") }
        ) { requests, timeout in
            await Self.write(requests, within: timeout, store: store)
        } after: { requests, answers in
            await Self.propagate(requests, answers, cache: cache, streams: streams, metrics: metrics)
        }
    }

    /// How many notifications like `sample` one insert command holds (`NotificationStore`).
    func notificationsPerInsert(like sample: Notification) async throws -> Int {
        try await store.notificationsPerInsert(like: sample)
    }

    /// Stores one notification; `created: false` when an earlier run of the same idempotent
    /// request had stored it (see `NotificationStore.insert`).
    func create(_ notification: Notification) async throws -> (notification: Notification, created: Bool) {
        guard case .created(let stored, let created) = try await commit.submit(.create(notification)) else {
            throw StoreError.unavailable("a create was answered as a fan-out")
        }
        return (stored, created)
    }

    /// Stores a fan-out batch; returns the notifications this call stored. A resumed batch
    /// goes to the store even when none of its candidates is eligible now: their counters
    /// are recounted (its first run may have counted some).
    func fanout(_ notifications: [Notification], resumed: Bool, candidates: [String], marker: String) async throws -> [Notification] {
        guard !notifications.isEmpty || (resumed && !candidates.isEmpty) else { return [] }
        let batch = FanoutBatch(notifications: notifications, resumed: resumed, candidates: resumed ? candidates : [], marker: marker)
        guard case .fannedOut(let stored) = try await commit.submit(.fanout(batch)) else {
            throw StoreError.unavailable("a fan-out was answered as a create")
        }
        return stored
    }

    /// One group-commit write, the serialized part: MongoDB only.
    static func write(_ requests: [Request], within timeout: Duration, store: any NotificationStore) async -> [Result<Answer, any Error>] {
        var creates: [Notification] = []
        var batches: [FanoutBatch] = []
        for request in requests {
            switch request {
            case .create(let notification): creates.append(notification)
            case .fanout(let batch): batches.append(batch)
            }
        }
        let answers = await store.insert(creates: creates, batches: batches, within: timeout)
        var createAnswers = answers.creates.makeIterator()
        var batchAnswers = answers.batches.makeIterator()
        let missing = StoreError.unavailable("the store gave no answer for it")
        return requests.map { request in
            switch request {
            case .create:
                (createAnswers.next() ?? .failure(missing)).map { Answer.created($0.notification, created: $0.created) }
            case .fanout:
                (batchAnswers.next() ?? .failure(missing)).map { Answer.fannedOut($0) }
            }
        }
    }

    /// The Redis side of a write, once for all of it, before its requests are answered: every
    /// recipient's cached feed is dropped (also for a failed write: its outcome may be
    /// unknown), and what was stored is published to open streams.
    static func propagate(
        _ requests: [Request], _ answers: [Result<Answer, any Error>], cache: FeedCache, streams: StreamPublisher, metrics: ServiceMetrics
    ) async {
        var recipients: [String] = []
        var seen: Set<String> = []
        for request in requests {
            for notification in request.notifications where seen.insert(notification.recipientId).inserted { recipients.append(notification.recipientId) }
        }
        if recipients.count == 1 {
            await cache.invalidate(user: recipients[0])
        } else {
            await cache.invalidateMany(users: recipients)
        }
        var published: [Notification] = []
        var createdCount = 0
        for (request, answer) in zip(requests, answers) {
            switch (request, answer) {
            case (_, .success(.created(let notification, let created))):
                published.append(notification)
                if created { createdCount += 1 }
            case (.fanout(let batch), .success(.fannedOut(let stored))):
                // A resumed batch's earlier run may have stored some and died before publishing.
                published += batch.resumed ? batch.notifications : stored
                createdCount += stored.count
            default:
                break
            }
        }
        metrics.notificationsCreated(createdCount)
        // After the write returned: open streams on every instance get them (one round trip).
        await streams.publish(published.map { ($0.recipientId, StreamMessage($0)) })
    }
}
