internal import Logging

/// One user's Server-Sent Events stream.
///
/// It sends the unread count on connect, then (after a `Last-Event-ID` resume from MongoDB)
/// every new notification once, each followed by the count when it changed, and a comment
/// line when nothing was sent for a heartbeat. New notifications come from Redis push
/// (the mailbox) while push is available; otherwise, and at least every 10 s even on push, a
/// MongoDB query looks for notifications *written* (`writtenAt`, the time their insert was
/// sent, which a resumed fan-out batch renews) since a window (`WriteTiming.lookBack`) before
/// the previous such look: so a notification whose publish was lost arrives at the next look,
/// whatever else was sent meanwhile, and whatever its id's time (a resumed batch keeps the ids
/// its first run planned). Ids sent are remembered beyond that window, so nothing is sent twice
/// within a stream, across the push/poll switches too. Looks are spread (each interval is drawn
/// from 80–100 % of the configured one), so streams opened together do not query together.
public struct NotificationStream: Sendable {
    let user: String
    let store: any NotificationStore
    let feed: NotificationFeed
    let hub: StreamHub
    let mailbox: StreamMailbox
    let heartbeat: Duration
    let pollInterval: Duration
    /// When the stream's credential was issued (`StreamHub.open`), and where its revocation is
    /// read while push is down (with push, the revocation's message ends the stream).
    let credentialSecond: Int64
    let revocations: TokenRevocations?
    let clock: any WallClock

    /// A push-mode stream still checks MongoDB this often (a lost publish arrives late, not never).
    static let pushCheckInterval = Duration.seconds(10)
    static let resumeLimit = 100
    static let pollLimit = 200

    /// A stream for `user`, registered with the hub; nil beyond `STREAM_MAX_CONNECTIONS`.
    /// `credentialSecond`: a user token's `iat`, nil for an API key (the stream's own start).
    public static func open(
        user: String, credentialSecond: Int64?, revocations: TokenRevocations?, store: any NotificationStore, feed: NotificationFeed,
        hub: StreamHub, heartbeat: Duration, pollInterval: Duration
    ) -> NotificationStream? {
        let clock = SystemWallClock()
        let credential = credentialSecond ?? clock.now().milliseconds / 1000
        guard let mailbox = hub.open(user: user, credentialSecond: credential) else { return nil }
        return NotificationStream(
            user: user, store: store, feed: feed, hub: hub, mailbox: mailbox, heartbeat: heartbeat, pollInterval: pollInterval,
            credentialSecond: credential, revocations: revocations, clock: clock)
    }

    /// Unregisters the stream (its user's channel is unsubscribed with the last one).
    public func close() {
        hub.close(mailbox)
    }

    /// Runs until the hub closes the stream (shutdown), a write fails (the client left or is too
    /// slow), or the task is cancelled.
    /// - Parameter send: writes one SSE frame.
    public func run(resumeAfter lastEventID: String?, send: (String) async throws -> Void) async throws {
        let lookBack = WriteTiming(writeDeadline: store.writeTimeout).lookBack
        var state = StreamState(openedAt: clock.now(), reach: max(Self.pushCheckInterval, pollInterval) + lookBack)
        let monotonic = ContinuousClock()
        var lastSent = monotonic.now
        var lastCheck = monotonic.now
        // Wall-clock time of the previous look at MongoDB: the next one starts a look-back before it.
        var lastCheckAt = state.openedAt
        var spread = Double.random(in: 0.8...1.0)
        func emit(_ frame: String, event: String) async throws {
            try await send(frame)
            hub.metrics.streamEventSent(event)
            lastSent = monotonic.now
        }
        /// `unread-count` when the unread count changed, `counts` when any count changed (both on connect).
        func sendCount(force: Bool) async throws {
            guard let counts = Counts(json: try await feed.counts(userId: user).body) else { return }
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
        func sendNotification(id: String, createdAt: Int64, json: String) async throws {
            guard state.markSent(id: id, at: clock.now()) else { return }
            try await emit("event: notification\nid: \(id)\ndata: \(json)\n\n", event: "notification")
            hub.metrics.streamDelivered(after: .milliseconds(clock.now().milliseconds - createdAt))
        }
        /// Sends `found` that this stream has not sent yet, oldest id first.
        func deliver(_ found: [Notification]) async throws {
            for notification in found.sorted(by: { $0.id < $1.id }) {
                var json = JSONWriter()
                notification.write(to: &json)
                try await sendNotification(id: notification.id, createdAt: notification.createdAt.milliseconds, json: json.string)
            }
        }
        /// A resume: what has an id greater than `floor`; false when there are `limit` or more.
        func resume(after floor: String, limit: Int) async throws -> Bool {
            let found = try await store.newer(recipientId: user, than: floor, limit: limit)
            if found.count >= limit { return false }
            try await deliver(found)
            return true
        }
        /// A look: what was written since a look-back before `anchor`; false when there are `limit` or more.
        func look(since anchor: Timestamp, limit: Int) async throws -> Bool {
            let found = try await store.written(recipientId: user, since: anchor.advanced(by: .zero - lookBack), limit: limit)
            if found.count >= limit { return false }
            try await deliver(found)
            return true
        }
        /// Remembers as sent what exists from `time` (minus the look-back): with a `ceiling` (a
        /// resume point), the ids up to it; without, what was written since then, which is all a
        /// look can find (an id's time never follows its write).
        func markExisting(from time: Timestamp, upTo ceiling: String? = nil) async throws {
            let since = time.advanced(by: .zero - lookBack)
            let existing = if let ceiling {
                try await store.newer(recipientId: user, than: ObjectIDs.lowerBound(at: since), limit: 1000).filter { $0.id <= ceiling }
            } else {
                try await store.written(recipientId: user, since: since, limit: 1000)
            }
            let now = clock.now()
            for notification in existing { _ = state.markSent(id: notification.id, at: now) }
        }
        /// Too much to send one by one: the client reloads its feed; the stream goes on from now.
        /// What exists is noted before the event goes out, so a notification the client writes
        /// once it sees the event is not taken for an old one.
        func reset() async throws {
            try await markExisting(from: clock.now())
            try await emit("event: reset\ndata: {}\n\n", event: "reset")
        }

        // What exists now is not new: without a resume point, everything so far; with one, the
        // window up to it (ids from other instances may sort just below it). This snapshot is
        // taken before the first event: a notification the client creates once it sees that
        // event is written after the snapshot, so it is not mistaken for an old one.
        if let lastEventID, let resumeTime = ObjectIDs.time(of: lastEventID) {
            try await markExisting(from: resumeTime, upTo: lastEventID)
        } else {
            try await markExisting(from: state.openedAt)
        }
        try await sendCount(force: true)
        // Then what is strictly newer than the resume point, oldest first.
        if let lastEventID, ObjectIDs.time(of: lastEventID) != nil {
            if !(try await resume(after: lastEventID, limit: Self.resumeLimit + 1)) { try await reset() }
        }
        while !Task.isCancelled {
            let (messages, catchUp, finished) = mailbox.drain()
            if finished {
                try? await send(hub.retryLine())
                return
            }
            let push = hub.pushAvailable
            for message in messages {
                switch message {
                case .notification(let id, let createdAt, let json):
                    try await sendNotification(id: id, createdAt: createdAt, json: json)
                    try await sendCount(force: false)
                case .countChanged:
                    try await sendCount(force: false)
                case .revoked:
                    break  // The hub ends the stream (`StreamHub.revoked`); never posted.
                }
            }
            let interval = (push ? Self.pushCheckInterval : pollInterval) * spread
            if catchUp || monotonic.now - lastCheck >= interval {
                if !push {
                    hub.metrics.fallback(.stream)
                    // No push, so no revocation message: read it (cached, within the 30 s bound).
                    if let revocations, (try? await revocations.revokedAt(user: user)) ?? 0 >= credentialSecond {
                        try? await send(hub.retryLine())
                        return
                    }
                }
                let now = clock.now()
                if !(try await look(since: lastCheckAt, limit: Self.pollLimit)) { try await reset() }
                try await sendCount(force: false)
                lastCheck = monotonic.now
                lastCheckAt = now
                spread = Double.random(in: 0.8...1.0)
            }
            if monotonic.now - lastSent >= heartbeat { try await emit(": keep-alive\n\n", event: "keep-alive") }
            let untilCheck = interval - (monotonic.now - lastCheck)
            let untilHeartbeat = heartbeat - (monotonic.now - lastSent)
            await mailbox.wait(upTo: max(.milliseconds(10), min(untilCheck, untilHeartbeat)))
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
