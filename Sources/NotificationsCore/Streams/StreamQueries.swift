internal import Synchronization

/// The streams' MongoDB queries, shared: one query answers up to 1000 users at once.
///
/// A stream that opens (resumes, or notes what exists) asks here instead of querying on its
/// own. Requests that arrive within `gather` of each other, or while the previous query runs,
/// are answered together, so a reconnection storm of thousands of resumes costs a few queries.
/// Each answer is still exact for its own request: the shared query starts at the lowest floor
/// of its batch, every user's rows are filtered by that user's own floor, and it pages by id
/// until every request has all its rows or its limit.
public final class StreamQueries: Sendable {
    /// One user's share of a shared query.
    public struct Request: Sendable {
        public var user: String
        public var since: StreamSince
        /// The most rows wanted; a request that gets this many is `full` (more may exist).
        public var limit: Int
    }

    /// What a request's user has after its floor, oldest id first.
    public struct Answer: Sendable {
        public var found: [Notification] = []
        /// `limit` rows came back: there may be more.
        public var full = false
    }

    private struct Waiting {
        var request: Request
        var continuation: CheckedContinuation<Answer, any Error>
    }

    private struct WaitingCounts {
        var user: String
        var continuation: CheckedContinuation<Counts, any Error>
    }

    private struct State {
        var waiting: [Waiting] = []
        var counts: [WaitingCounts] = []
        var flushing = false

        var isEmpty: Bool { waiting.isEmpty && counts.isEmpty }
    }

    let store: any NotificationStore
    /// The users' counts, from the feed cache first (`NotificationStream.counts`).
    let feed: NotificationFeed
    let metrics: ServiceMetrics
    /// How long the first request of a batch waits for others.
    let gather: Duration
    /// What every stream of this instance shares: a look's reach back before the time it starts
    /// from (`WriteTiming.lookBack`), how long ago the shared check can reach (ids sent are
    /// remembered at least this long), and the clock.
    let lookBack: Duration
    let reach: Duration
    let clock: any WallClock = SystemWallClock()
    private let state = Mutex(State())

    static let usersPerQuery = 1000
    static let rowsPerPage = 1000

    public init(store: any NotificationStore, feed: NotificationFeed, metrics: ServiceMetrics, pollInterval: Duration, gather: Duration = .milliseconds(20)) {
        self.store = store
        self.feed = feed
        self.metrics = metrics
        self.gather = gather
        lookBack = WriteTiming(writeDeadline: store.writeTimeout).lookBack
        reach = max(StreamWatcher.pushCheckInterval, pollInterval) + lookBack
    }

    /// One stream's look, answered with the others that arrive together. A resume (`.id`) is
    /// counted as `stream_resume`, a look at what was written (`.written`) as `stream_open`.
    func ask(_ request: Request) async throws -> Answer {
        try await withCheckedThrowingContinuation { continuation in
            enqueue { $0.waiting.append(Waiting(request: request, continuation: continuation)) }
        }
    }

    /// A user's counts when a stream opens and the feed cache does not have them, read with
    /// those of the other streams opening together (one query per 1000 users).
    func counts(_ user: String) async throws -> Counts {
        try await withCheckedThrowingContinuation { continuation in
            enqueue { $0.counts.append(WaitingCounts(user: user, continuation: continuation)) }
        }
    }

    private func enqueue(_ add: (inout State) -> Void) {
        let start = state.withLock { state -> Bool in
            add(&state)
            defer { state.flushing = true }
            return !state.flushing
        }
        // Detached: the batch serves many streams, and inherits nothing from the first one.
        if start { Task.detached { await self.flush() } }
    }

    /// Answers what waits, batch after batch, until nothing does.
    private func flush() async {
        try? await Task.sleep(for: gather)
        while true {
            let (batch, counts) = state.withLock { state -> ([Waiting], [WaitingCounts]) in
                defer { (state.waiting, state.counts) = ([], []) }
                if state.isEmpty { state.flushing = false }
                return (state.waiting, state.counts)
            }
            if batch.isEmpty && counts.isEmpty { return }
            for start in stride(from: 0, to: counts.count, by: Self.usersPerQuery) {
                let chunk = counts[start..<min(counts.count, start + Self.usersPerQuery)]
                do {
                    let found = try await store.counts(recipientIds: Array(Set(chunk.map(\.user))))
                    for waiting in chunk { waiting.continuation.resume(returning: found[waiting.user] ?? Counts()) }
                } catch {
                    for waiting in chunk { waiting.continuation.resume(throwing: error) }
                }
            }
            // By kind, then by floor, so the users of one query have floors close together.
            let resumes = batch.filter { if case .id = $0.request.since { true } else { false } }
            let opens = batch.filter { if case .written = $0.request.since { true } else { false } }
            for (group, purpose) in [(resumes, ServiceMetrics.QueryPurpose.streamResume), (opens, .streamOpen)] where !group.isEmpty {
                let sorted = group.sorted { Self.floorOrder($0.request.since, $1.request.since) }
                for chunk in Self.chunks(sorted, users: Self.usersPerQuery) {
                    do {
                        let answers = try await look(chunk.map(\.request), purpose: purpose)
                        for (waiting, answer) in zip(chunk, answers) { waiting.continuation.resume(returning: answer) }
                    } catch {
                        for waiting in chunk { waiting.continuation.resume(throwing: error) }
                    }
                }
            }
        }
    }

    /// The answers to `requests` (all of one kind), in their order: one query per page of rows
    /// for all their users.
    public func look(_ requests: [Request], purpose: ServiceMetrics.QueryPurpose) async throws -> [Answer] {
        guard let floor = requests.map(\.since).min(by: Self.floorOrder) else { return [] }
        var answers = Array(repeating: Answer(), count: requests.count)
        var requestsOf: [String: [Int]] = [:]
        for (index, request) in requests.enumerated() { requestsOf[request.user, default: []].append(index) }
        var users = Array(requestsOf.keys)
        var after: String?
        while !users.isEmpty {
            let page = try await store.streamed(recipientIds: users, since: floor, after: after, limit: Self.rowsPerPage)
            metrics.mongoQuery(purpose)
            for notification in page {
                for index in requestsOf[notification.recipientId] ?? [] where !answers[index].full {
                    guard Self.isAfter(notification, requests[index].since) else { continue }
                    answers[index].found.append(notification)
                    answers[index].full = answers[index].found.count >= requests[index].limit
                }
            }
            guard page.count == Self.rowsPerPage, let last = page.last else { break }
            after = last.id
            // The next page only for users with a request still wanting rows.
            users = requestsOf.filter { $0.value.contains { !answers[$0].full } }.map(\.key)
        }
        return answers
    }

    /// Whether a row of a shared query belongs to a request: above its own floor. (A look at
    /// what was written shares the batch's earliest time: a little more is marked as existing.)
    static func isAfter(_ notification: Notification, _ since: StreamSince) -> Bool {
        switch since {
        case .id(let floor): notification.id > floor
        case .written: true
        }
    }

    static func floorOrder(_ a: StreamSince, _ b: StreamSince) -> Bool {
        switch (a, b) {
        case (.id(let x), .id(let y)): x < y
        case (.written(let x), .written(let y)): x < y
        case (.id, .written): true
        case (.written, .id): false
        }
    }

    /// `sorted` cut into runs of at most `limit` distinct users.
    private static func chunks(_ sorted: [Waiting], users limit: Int) -> [[Waiting]] {
        var chunks: [[Waiting]] = []
        var current: [Waiting] = []
        var users = Set<String>()
        for waiting in sorted {
            if !users.contains(waiting.request.user), users.count == limit {
                chunks.append(current)
                current = []
                users = []
            }
            users.insert(waiting.request.user)
            current.append(waiting)
        }
        if !current.isEmpty { chunks.append(current) }
        return chunks
    }
}
