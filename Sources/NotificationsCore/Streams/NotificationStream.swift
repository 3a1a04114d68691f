internal import Logging
internal import Synchronization

/// One user's Server-Sent Events stream.
///
/// It sends the unread count on connect, then (after a `Last-Event-ID` resume from MongoDB)
/// every new notification once, each followed by the count when it changed, and a comment
/// line when nothing was sent for a heartbeat. New notifications come from Redis push and from
/// the instance's shared check (`StreamWatcher`), both through the stream's mailbox; the
/// stream's own queries (what exists when it opens, what it missed) go through
/// `StreamQueries`, shared with the streams that open at the same moment. Ids sent are
/// remembered beyond the check's reach, so nothing is sent twice within a stream, across the
/// push/poll switches too. Between events the stream's task is suspended on its mailbox: no
/// timer of its own. A class: the response body that runs it captures one reference.
public final class NotificationStream: Sendable {
    let user: String
    let queries: StreamQueries
    let hub: StreamHub
    let mailbox: StreamMailbox

    init(user: String, queries: StreamQueries, hub: StreamHub, mailbox: StreamMailbox) {
        self.user = user
        self.queries = queries
        self.hub = hub
        self.mailbox = mailbox
    }

    var feed: NotificationFeed { queries.feed }
    /// A look's reach back before the time it starts from (`WriteTiming.lookBack`).
    var lookBack: Duration { queries.lookBack }
    /// How long ago the shared check can reach: ids sent are remembered at least this long.
    var reach: Duration { queries.reach }
    var clock: any WallClock { queries.clock }

    static let resumeLimit = 100
    /// At most this many existing notifications are noted when a stream opens or resets.
    static let existingLimit = 1000

    /// A stream for `user`, registered with the hub.
    /// `credentialSecond`: a user token's `iat`, nil for an API key (the stream's own start).
    /// `onStuck`: drops the client's connection (its client has not read for a while).
    public static func open(
        user: String, credentialSecond: Int64?, queries: StreamQueries, hub: StreamHub, onStuck: @escaping @Sendable () -> Void = {}
    ) throws(StreamHub.Refusal) -> NotificationStream {
        let credential = credentialSecond ?? queries.clock.now().milliseconds / 1000
        let mailbox = try hub.open(user: user, credentialSecond: credential, onStuck: onStuck)
        return NotificationStream(user: user, queries: queries, hub: hub, mailbox: mailbox)
    }

    /// The user's counts from the feed cache, else from a query shared with the streams opening together.
    func counts() async throws -> Counts? {
        let (queries, user) = (queries, user)
        return Counts(json: try await feed.counts(userId: user) { try await queries.counts(user) }.body)
    }

    /// Unregisters the stream (its user's channel is unsubscribed with the last one).
    public func close() {
        hub.close(mailbox)
    }

    /// What the stream sends first: what exists (so it is not sent as new), the counts, and
    /// what a `Last-Event-ID` missed, read on a stack of its own (`onItsOwnStack`).
    public func prepare(resumeAfter lastEventID: String?) async throws -> StreamSession {
        let session = StreamSession(self)
        try await onItsOwnStack { try await session.open(resumeAfter: lastEventID) }
        return session
    }

    /// The line a stream ends with (`StreamHub.retryLine`).
    public func retryLine() -> String {
        hub.retryLine()
    }
}

/// Runs `body` in a task of its own and returns its result. A task keeps the async stack it
/// has grown for as long as it lives (the runtime's task allocator holds on to freed slabs),
/// and a stream's task lives as long as the stream: its queries and cache reads, with their
/// Redis and MongoDB call chains, run in a task whose stack is freed when they return. Not a
/// child task: a task group's body would add its own frames to the stream's task. Each call is
/// bounded by the Redis and MongoDB deadlines, so it needs no cancellation.
func onItsOwnStack<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) async throws -> T {
    try await Task.detached(operation: body).value
}

/// One stream's run: what it sent, and how it sends. Opened on a stack of its own, then used
/// by the connection's task only (its state is behind a lock for that hand-over).
///
/// The connection's task lives as long as the stream, and keeps the deepest async stack it
/// ever grew: so reads of Redis or MongoDB run `onItsOwnStack`, frames are built by plain
/// (synchronous) functions, and the async functions here only fetch and write.
public final class StreamSession: Sendable {
    /// One SSE frame and the event it counts as in `sse_events_sent_total`.
    typealias Frame = (text: String, event: String)

    private struct State {
        var stream: StreamState
        /// What `open` read, to be sent first.
        var opening: [Frame] = []
    }

    let stream: NotificationStream
    private let locked: Mutex<State>

    init(_ stream: NotificationStream) {
        self.stream = stream
        locked = Mutex(State(stream: StreamState(openedAt: stream.clock.now(), reach: stream.reach)))
    }

    var hub: StreamHub { stream.hub }
    var mailbox: StreamMailbox { stream.mailbox }

    /// What exists now is not new. This snapshot is taken before the first event: a
    /// notification the client creates once it sees that event is written after it, so it is
    /// not mistaken for an old one. Without a resume point: what was written since the next
    /// shared check's floor. With one: the ids from a look-back before it (ids from other
    /// instances may sort just below it), and in the same query what came after it. Then the
    /// counts, then what was missed, oldest first (or `reset`).
    func open(resumeAfter lastEventID: String?) async throws {
        let resumeTime = lastEventID.flatMap(ObjectIDs.time(of:))
        let since: StreamSince
        var limit = NotificationStream.existingLimit
        if let resumeTime {
            since = .id(ObjectIDs.lowerBound(at: resumeTime.advanced(by: .zero - stream.lookBack)))
            limit += NotificationStream.resumeLimit + 1
        } else {
            let openedAt = locked.withLock { $0.stream.openedAt }
            since = .written(hub.checkFloor(orEarlier: openedAt.advanced(by: .zero - stream.lookBack)))
        }
        let answer = try await stream.queries.ask(StreamQueries.Request(user: stream.user, since: since, limit: limit))
        let counts = try await stream.counts()
        var missed: [Notification] = []
        var tooManyMissed = false
        if let lastEventID, resumeTime != nil {
            mark(answer.found.filter { $0.id <= lastEventID })
            missed = answer.found.filter { $0.id > lastEventID }
            // A full answer may have more after it than it holds: the client reloads instead.
            tooManyMissed = answer.full || missed.count > NotificationStream.resumeLimit
        } else {
            mark(answer.found)
        }
        var frames = countFrames(counts, force: true)
        if tooManyMissed {
            frames += try await resetFrames()
        } else {
            frames += notificationFrames(missed)
        }
        locked.withLock { $0.opening = frames }
    }

    func takeOpeningFrames() -> [Frame] {
        locked.withLock { state in
            defer { state.opening = [] }
            return state.opening
        }
    }

    /// Sends what `open` read, then runs until the hub ends the stream (shutdown, revocation),
    /// a write fails (the client left), or the task is cancelled. Failures of its own (MongoDB
    /// unusable for a count) are thrown: the caller ends the stream with a `retry:` line.
    /// - Parameter send: writes one SSE frame.
    public func run(send: (String) async throws -> Void) async throws {
        // The loop that idles holds only its own few words; each wake-up runs in a function of
        // its own (`handle`).
        try await write(takeOpeningFrames(), send: send)
        while true {
            let signals = await mailbox.next()
            if Task.isCancelled { return }
            guard try await handle(signals, send: send) else { return }
        }
    }

    /// Notes `existing` as sent: no look sends them as new.
    func mark(_ existing: [Notification]) {
        let now = stream.clock.now()
        locked.withLock { state in for notification in existing { _ = state.stream.markSent(id: notification.id, at: now) } }
    }

    /// Acts on what woke the stream; false when the stream ends.
    func handle(_ signals: StreamMailbox.Signals, send: (String) async throws -> Void) async throws -> Bool {
        if signals.finished {
            try? await send(hub.retryLine())
            return false
        }
        if signals.reset { try await write(try await onItsOwnStack { [self] in try await resetFrames() }, send: send) }
        let (frames, countsChanged) = frames(for: signals.items)
        try await write(frames, send: send)
        if countsChanged { try await write(countFrames(try await onItsOwnStack { [stream] in try await stream.counts() }, force: false), send: send) }
        if signals.heartbeat, hub.elapsed() - mailbox.lastWrite.load(ordering: .relaxed) >= hub.heartbeat.nanoseconds {
            try await write([(": keep-alive\n\n", "keep-alive")], send: send)
        }
        return true
    }

    /// Too much to send one by one: the client reloads its feed; the stream goes on from now.
    /// What exists is noted before the event goes out, so a notification the client writes
    /// once it sees the event is not taken for an old one.
    func resetFrames() async throws -> [Frame] {
        let request = StreamQueries.Request(
            user: stream.user, since: .written(stream.clock.now().advanced(by: .zero - stream.lookBack)), limit: NotificationStream.existingLimit)
        mark(try await stream.queries.ask(request).found)
        return [("event: reset\ndata: {}\n\n", "reset")]
    }

    func write(_ frames: [Frame], send: (String) async throws -> Void) async throws {
        for frame in frames {
            mailbox.writeStarted.store(hub.elapsed(), ordering: .relaxed)
            defer {
                mailbox.writeStarted.store(0, ordering: .relaxed)
                mailbox.lastWrite.store(hub.elapsed(), ordering: .relaxed)
            }
            try await send(frame.text)
            hub.metrics.streamEventSent(frame.event)
        }
    }

    /// The frames of what woke the stream, and whether the counts may have changed (they are
    /// read afterwards, once).
    func frames(for items: [StreamMailbox.Item]) -> (frames: [Frame], countsChanged: Bool) {
        var frames: [Frame] = []
        var countsChanged = false
        for item in items {
            switch item {
            case .message(.notification(let id, let createdAt, let json)):
                if let frame = notificationFrame(id: id, createdAt: createdAt, json: json) {
                    frames.append(frame)
                    countsChanged = true
                }
            case .message(.countChanged):
                countsChanged = true
            case .message(.revoked):
                break  // The hub ends the stream (`StreamHub.revoked`); never posted.
            case .found(let found):
                let sent = notificationFrames(found)
                frames += sent
                countsChanged = countsChanged || !sent.isEmpty
            case .counts(let counts):
                frames += countFrames(counts, force: false)
            }
        }
        return (frames, countsChanged)
    }

    /// `unread-count` when the unread count changed, `counts` when any count changed (both on connect).
    func countFrames(_ counts: Counts?, force: Bool) -> [Frame] {
        guard let counts else { return [] }
        let previous = locked.withLock { state -> Counts?? in
            let previous = force ? nil : state.stream.lastCounts
            guard counts != previous else { return .none }
            state.stream.lastCounts = counts
            return .some(previous)
        }
        guard let previous else { return [] }
        var frames: [Frame] = []
        if counts.unread != previous?.unread {
            frames.append(("event: unread-count\ndata: {\"unreadCount\":\(counts.unread)}\n\n", "unread-count"))
        }
        frames.append((
            "event: counts\ndata: {\"unreadCount\":\(counts.unread),\"unseenCount\":\(counts.unseen),\"totalCount\":\(counts.total)}\n\n",
            "counts"
        ))
        return frames
    }

    /// The frame of a notification, or nil if the stream sent it already.
    func notificationFrame(id: String, createdAt: Int64, json: String) -> Frame? {
        let now = stream.clock.now()
        guard locked.withLock({ $0.stream.markSent(id: id, at: now) }) else { return nil }
        hub.metrics.streamDelivered(after: .milliseconds(now.milliseconds - createdAt))
        return ("event: notification\nid: \(id)\ndata: \(json)\n\n", "notification")
    }

    /// The frames of what of `found` this stream has not sent yet, oldest id first.
    func notificationFrames(_ found: [Notification]) -> [Frame] {
        found.sorted { $0.id < $1.id }.compactMap { notification in
            var json = JSONWriter()
            notification.write(to: &json)
            return notificationFrame(id: notification.id, createdAt: notification.createdAt.milliseconds, json: json.string)
        }
    }
}

/// What one stream has sent: ids within reach of the next look at MongoDB, and the last count.
struct StreamState {
    let openedAt: Timestamp
    /// How long ago a look at MongoDB can reach (an interval and a look-back).
    let reach: Duration
    /// Ids sent (or found existing), with when: a look finds a notification again for as long
    /// as its write is within reach, so it is remembered at least that long.
    var sent: [String: Timestamp] = [:]
    var lastCounts: Counts?

    init(openedAt: Timestamp, reach: Duration) {
        self.openedAt = openedAt
        self.reach = reach
    }

    /// False if `id` was sent already. Forgets ids sent long before any look can reach (bounded memory).
    mutating func markSent(id: String, at now: Timestamp) -> Bool {
        guard sent[id] == nil else { return false }
        sent[id] = now
        if sent.count > 4096 {
            // With as much again to spare.
            let horizon = now.advanced(by: .zero - reach * 2)
            sent = sent.filter { $0.value >= horizon }
        }
        return true
    }
}
