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
/// timer of its own.
public struct NotificationStream: Sendable {
    let user: String
    let queries: StreamQueries
    let feed: NotificationFeed
    let hub: StreamHub
    let mailbox: StreamMailbox
    /// A look's reach back before the time it starts from (`WriteTiming.lookBack`).
    let lookBack: Duration
    /// How long ago the shared check can reach: ids sent are remembered at least this long.
    let reach: Duration
    let clock: any WallClock

    static let resumeLimit = 100
    /// At most this many existing notifications are noted when a stream opens or resets.
    static let existingLimit = 1000

    /// Why a stream was not opened.
    public enum Refusal: Error {
        /// `STREAM_MAX_CONNECTIONS` are open (or the instance is shutting down).
        case full
        /// `STREAM_ACCEPT_PER_SECOND` opened in the last second: a storm is let in at that pace.
        case tooFast
    }

    /// A stream for `user`, registered with the hub.
    /// `credentialSecond`: a user token's `iat`, nil for an API key (the stream's own start).
    /// `onStuck`: drops the client's connection (its client has not read for a while).
    public static func open(
        user: String, credentialSecond: Int64?, queries: StreamQueries, feed: NotificationFeed, hub: StreamHub, pollInterval: Duration,
        onStuck: @escaping @Sendable () -> Void = {}
    ) throws(Refusal) -> NotificationStream {
        let clock = SystemWallClock()
        let credential = credentialSecond ?? clock.now().milliseconds / 1000
        let mailbox: StreamMailbox
        do {
            mailbox = try hub.open(user: user, credentialSecond: credential, onStuck: onStuck)
        } catch {
            switch error {
            case .full: throw .full
            case .tooFast: throw .tooFast
            }
        }
        let lookBack = WriteTiming(writeDeadline: queries.store.writeTimeout).lookBack
        return NotificationStream(
            user: user, queries: queries, feed: feed, hub: hub, mailbox: mailbox, lookBack: lookBack,
            reach: max(StreamWatcher.pushCheckInterval, pollInterval) + lookBack, clock: clock)
    }

    /// Unregisters the stream (its user's channel is unsubscribed with the last one).
    public func close() {
        hub.close(mailbox)
    }

    /// Runs until the hub ends the stream (shutdown, revocation), a write fails (the client
    /// left), or the task is cancelled. Failures of its own (MongoDB unusable when it opens)
    /// are thrown: the caller ends the stream with a `retry:` line.
    /// - Parameter send: writes one SSE frame.
    public func run(resumeAfter lastEventID: String?, send: (String) async throws -> Void) async throws {
        var state = StreamState(openedAt: clock.now(), reach: reach)
        func emit(_ frame: String, event: String) async throws {
            mailbox.writeStarted.store(hub.elapsed(), ordering: .relaxed)
            defer {
                mailbox.writeStarted.store(0, ordering: .relaxed)
                mailbox.lastWrite.store(hub.elapsed(), ordering: .relaxed)
            }
            try await send(frame)
            hub.metrics.streamEventSent(event)
        }
        /// `unread-count` when the unread count changed, `counts` when any count changed (both on connect).
        func show(_ counts: Counts, force: Bool) async throws {
            let previous = force ? nil : state.lastCounts
            guard counts != previous else { return }
            state.lastCounts = counts
            if counts.unread != previous?.unread {
                try await emit("event: unread-count\ndata: {\"unreadCount\":\(counts.unread)}\n\n", event: "unread-count")
            }
            try await emit(
                "event: counts\ndata: {\"unreadCount\":\(counts.unread),\"unseenCount\":\(counts.unseen),\"totalCount\":\(counts.total)}\n\n",
                event: "counts")
        }
        func sendCount(force: Bool) async throws {
            let counts = try await feed.counts(userId: user) { [queries, user] in try await queries.counts(user) }
            guard let counts = Counts(json: counts.body) else { return }
            try await show(counts, force: force)
        }
        /// False if the stream sent `id` already.
        func sendNotification(id: String, createdAt: Int64, json: String) async throws -> Bool {
            guard state.markSent(id: id, at: clock.now()) else { return false }
            try await emit("event: notification\nid: \(id)\ndata: \(json)\n\n", event: "notification")
            hub.metrics.streamDelivered(after: .milliseconds(clock.now().milliseconds - createdAt))
            return true
        }
        /// Sends what of `found` this stream has not sent yet, oldest id first; whether any was.
        func deliver(_ found: [Notification]) async throws -> Bool {
            var sent = false
            for notification in found.sorted(by: { $0.id < $1.id }) {
                var json = JSONWriter()
                notification.write(to: &json)
                if try await sendNotification(id: notification.id, createdAt: notification.createdAt.milliseconds, json: json.string) { sent = true }
            }
            return sent
        }
        /// Notes as sent what exists from `since` on, so no look sends it as new.
        func markExisting(since: StreamSince) async throws -> StreamQueries.Answer {
            let answer = try await queries.ask(.init(user: user, since: since, limit: Self.existingLimit))
            let now = clock.now()
            for notification in answer.found { _ = state.markSent(id: notification.id, at: now) }
            return answer
        }
        /// Too much to send one by one: the client reloads its feed; the stream goes on from now.
        /// What exists is noted before the event goes out, so a notification the client writes
        /// once it sees the event is not taken for an old one.
        func reset() async throws {
            _ = try await markExisting(since: .written(clock.now().advanced(by: .zero - lookBack)))
            try await emit("event: reset\ndata: {}\n\n", event: "reset")
        }

        // What exists now is not new. This snapshot is taken before the first event: a
        // notification the client creates once it sees that event is written after it, so it
        // is not mistaken for an old one. Without a resume point: what was written since the
        // next shared check's floor. With one: the ids from a look-back before it (ids from other
        // instances may sort just below it), and in the same query what came after it.
        var missed: [Notification] = []
        var tooManyMissed = false
        if let lastEventID, let resumeTime = ObjectIDs.time(of: lastEventID) {
            let floor = ObjectIDs.lowerBound(at: resumeTime.advanced(by: .zero - lookBack))
            let answer = try await queries.ask(.init(user: user, since: .id(floor), limit: Self.existingLimit + Self.resumeLimit + 1))
            let now = clock.now()
            for notification in answer.found where notification.id <= lastEventID { _ = state.markSent(id: notification.id, at: now) }
            missed = answer.found.filter { $0.id > lastEventID }
            // A full answer may have more after it than it holds: the client reloads instead.
            tooManyMissed = answer.full || missed.count > Self.resumeLimit
        } else {
            _ = try await markExisting(since: .written(hub.checkFloor(orEarlier: state.openedAt.advanced(by: .zero - lookBack))))
        }
        try await sendCount(force: true)
        // Then what is strictly newer than the resume point, oldest first.
        if tooManyMissed {
            try await reset()
        } else if !missed.isEmpty {
            _ = try await deliver(missed)
        }
        while true {
            let signals = await mailbox.next()
            if Task.isCancelled { return }
            if signals.finished {
                try? await send(hub.retryLine())
                return
            }
            if signals.reset { try await reset() }
            for item in signals.items {
                switch item {
                case .message(.notification(let id, let createdAt, let json)):
                    if try await sendNotification(id: id, createdAt: createdAt, json: json) { try await sendCount(force: false) }
                case .message(.countChanged):
                    try await sendCount(force: false)
                case .message(.revoked):
                    break  // The hub ends the stream (`StreamHub.revoked`); never posted.
                case .found(let found):
                    if try await deliver(found) { try await sendCount(force: false) }
                case .counts(let counts):
                    try await show(counts, force: false)
                }
            }
            if signals.heartbeat, hub.elapsed() - mailbox.lastWrite.load(ordering: .relaxed) >= hub.heartbeat.nanoseconds {
                try await emit(": keep-alive\n\n", event: "keep-alive")
            }
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
