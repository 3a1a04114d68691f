public import Logging
public import RedisClient
internal import DequeModule
public import NIOCore
internal import Resilience
internal import Synchronization

/// This instance's open streams, by user, and its one Redis subscriber connection.
///
/// The first stream of a user subscribes to the user's channel, the last one unsubscribes
/// (one channel per user with open streams: an instance receives only its users' messages,
/// and a publish costs Redis one lookup of the channel's subscribers). SUBSCRIBE and
/// UNSUBSCRIBE are handed to the subscriber under the same lock that decided them, so they
/// reach Redis in the order decided: a tab that opens while the user's last other tab closes
/// leaves the user subscribed. (Handing them over only queues a write; the subscriber never
/// calls the hub while holding its own lock.) Messages go to the streams' mailboxes.
///
/// Nothing here runs per stream on a timer: one heartbeat pass (`heartbeats`) and one shared
/// check (`StreamWatcher`) serve every open stream, so an idle stream is a mailbox and a
/// suspended task, and costs no wake-ups.
public final class StreamHub: Sendable {
    private struct State {
        var streams: [String: [StreamMailbox]] = [:]
        var count = 0
        var subscribed = false
        var closed = false
        /// Streams that may still open in this second (`STREAM_ACCEPT_PER_SECOND`, refilled continuously).
        var acceptTokens: Double
        var acceptRefilled: ContinuousClock.Instant
        /// Where the next shared check starts looking (`StreamWatcher`): a stream opened now
        /// notes what exists from there, so that check does not send it as new.
        var checkFloor: Timestamp?
        /// Push came back: the watcher checks at once instead of at its next interval.
        var checkRequested = false
    }

    /// Why `open` refused a stream.
    public enum Refusal: Error {
        /// `STREAM_MAX_CONNECTIONS` are open (or the instance is shutting down).
        case full
        /// `STREAM_ACCEPT_PER_SECOND` opened in the last second: a storm is let in at that pace.
        case tooFast
    }

    private let state: Mutex<State>
    private let gateway: RedisGateway
    let maxConnections: Int
    let acceptPerSecond: Int
    /// A stream that sent nothing for this long sends `: keep-alive` (`STREAM_HEARTBEAT_SECONDS`).
    let heartbeat: Duration
    /// The largest `retry:` a stream ends with (`STREAM_RETRY_MAX_MS`).
    let retryMax: Duration
    let metrics: ServiceMetrics
    let logger: Logger
    /// The origin of the streams' write times (`elapsed`), kept as integers in their mailboxes.
    private let epoch = ContinuousClock.now
    /// Set once by `makeSubscriber` (the subscriber needs the hub's callbacks, the hub the subscriber).
    private let subscriberBox = Mutex<(any ChannelSubscriber)?>(nil)

    public init(
        gateway: RedisGateway, maxConnections: Int, acceptPerSecond: Int = 500, heartbeat: Duration = .seconds(15),
        retryMax: Duration = .seconds(10), metrics: ServiceMetrics, logger: Logger
    ) {
        self.gateway = gateway
        self.maxConnections = maxConnections
        self.acceptPerSecond = acceptPerSecond
        self.heartbeat = heartbeat
        self.retryMax = retryMax
        self.metrics = metrics
        self.logger = logger
        state = Mutex(State(acceptTokens: Double(acceptPerSecond), acceptRefilled: .now))
    }

    /// Builds the subscriber connection that feeds this hub (run it as a service).
    /// - Parameter endpoint: where each connection goes (Sentinel's master); nil: `configuration`'s.
    public func makeSubscriber(
        configuration: RedisConfiguration, eventLoopGroup: any EventLoopGroup, endpoint: RedisSubscriber.Endpoint? = nil,
        tracking: InvalidationTracking? = nil
    ) -> RedisSubscriber {
        let subscriber = RedisSubscriber(
            configuration: configuration, eventLoopGroup: eventLoopGroup, logger: logger, endpoint: endpoint, tracking: tracking,
            onMessage: { [weak self] channel, payload in self?.deliver(channel: channel, payload: payload) },
            onConnected: { [weak self] up in self?.subscriberConnected(up) })
        subscriberBox.withLock { $0 = subscriber }
        return subscriber
    }

    /// On a Redis Cluster: sharded pub/sub, one subscriber per master (run it as a service).
    /// - Parameter tracking: the near cache's tracking on one master, if there is a near cache.
    public func makeClusterSubscriber(
        cluster: RedisCluster, eventLoopGroup: any EventLoopGroup, tracking: (@Sendable (RedisAddress) -> InvalidationTracking)? = nil
    ) -> ClusterSubscriber {
        let subscriber = ClusterSubscriber(
            cluster: cluster, eventLoopGroup: eventLoopGroup, logger: logger, tracking: tracking,
            onMessage: { [weak self] channel, payload in self?.deliver(channel: channel, payload: payload) },
            onConnected: { [weak self] up in self?.subscriberConnected(up) })
        subscriberBox.withLock { $0 = subscriber }
        return subscriber
    }

    /// Drops the subscriber connection (a Sentinel failover): it reconnects to the new master.
    public func reconnectSubscriber() {
        subscriberBox.withLock { $0 }?.disconnect()
    }

    /// Push can be relied on: the subscriber is connected and the circuit is closed.
    var pushAvailable: Bool { state.withLock { $0.subscribed } && gateway.state == .closed }

    /// A mailbox for a new stream of `user`, or why not: beyond `STREAM_MAX_CONNECTIONS` or
    /// while shutting down (`full`), beyond `STREAM_ACCEPT_PER_SECOND` (`tooFast`).
    /// `credentialSecond`: when the stream's credential was issued (a user token's `iat`; for an
    /// API key, the second the stream opened): a revocation at or after it ends the stream.
    /// `onStuck`: drops the client's connection (its writes have not gone out for `stuckAfter`).
    func open(user: String, credentialSecond: Int64, onStuck: @escaping @Sendable () -> Void) throws(Refusal) -> StreamMailbox {
        let opened = state.withLock { state -> Result<(StreamMailbox, Int), Refusal> in
            guard !state.closed, state.count < maxConnections else { return .failure(.full) }
            let now = ContinuousClock.now
            let rate = Double(acceptPerSecond)
            state.acceptTokens = min(rate, state.acceptTokens + Double((now - state.acceptRefilled).nanoseconds) / 1e9 * rate)
            state.acceptRefilled = now
            guard state.acceptTokens >= 1 else { return .failure(.tooFast) }
            state.acceptTokens -= 1
            let mailbox = StreamMailbox(user: user, credentialSecond: credentialSecond, onStuck: onStuck, now: elapsed())
            if state.streams[user] == nil { subscriberBox.withLock { $0 }?.subscribe(StreamMessage.channel(user)) }
            state.streams[user, default: []].append(mailbox)
            state.count += 1
            return .success((mailbox, state.count))
        }
        let (mailbox, count) = try opened.get()
        metrics.streamsOpen(count)
        return mailbox
    }

    func close(_ mailbox: StreamMailbox) {
        let count = state.withLock { state -> Int in
            guard let index = state.streams[mailbox.user]?.firstIndex(where: { $0 === mailbox }) else { return state.count }
            state.streams[mailbox.user]?.remove(at: index)
            state.count -= 1
            if state.streams[mailbox.user]?.isEmpty ?? false {
                state.streams[mailbox.user] = nil
                subscriberBox.withLock { $0 }?.unsubscribe(StreamMessage.channel(mailbox.user))
            }
            return state.count
        }
        metrics.streamsOpen(count)
    }

    /// The line a stream ends with, whatever ends it (SIGTERM, its own failure): a `retry:`
    /// spread at random over 1 s up to `STREAM_RETRY_MAX_MS`, so the clients of a drained or
    /// failing instance do not all come back in the same second.
    public func retryLine() -> String {
        let most = max(1000, retryMax.milliseconds)
        return "retry: \(Int64.random(in: 1000...most))\n\n"
    }

    /// SIGTERM: every stream ends at once (after a spread `retry:`); no new ones open.
    public func closeAll() {
        let all = state.withLock { state -> [StreamMailbox] in
            state.closed = true
            return state.streams.values.flatMap { $0 }
        }
        for mailbox in all { mailbox.finish() }
    }

    public var openStreams: Int { state.withLock { $0.count } }

    /// Whether a stream would be accepted now (HEAD answers as GET would, without opening one).
    public var hasRoom: Bool { state.withLock { !$0.closed && $0.count < maxConnections } }

    /// The users with open streams (what the shared check looks at).
    var users: [String] { state.withLock { Array($0.streams.keys) } }

    /// Hands `item` to every open stream of `user`.
    func post(_ item: StreamMailbox.Item, to user: String) {
        for mailbox in mailboxes(of: user) { mailbox.post(item) }
    }

    /// The user's streams start over (`event: reset`): too much to send one by one.
    func reset(user: String) {
        for mailbox in mailboxes(of: user) { mailbox.requestReset() }
    }

    private func mailboxes(of user: String) -> [StreamMailbox] {
        state.withLock { $0.streams[user] ?? [] }
    }

    /// Where a stream opened now starts noting what exists: the next shared check's floor, or
    /// `fallback` (a look-back before now) if earlier or before the first check.
    func checkFloor(orEarlier fallback: Timestamp) -> Timestamp {
        state.withLock { state in state.checkFloor.map { min($0, fallback) } ?? fallback }
    }

    func setCheckFloor(_ floor: Timestamp) {
        state.withLock { $0.checkFloor = floor }
    }

    /// Whether push came back since the last call (the watcher then checks at once).
    func takeCheckRequest() -> Bool {
        state.withLock { state in
            defer { state.checkRequested = false }
            return state.checkRequested
        }
    }

    /// Time on the hub's clock, as the mailboxes keep it.
    func elapsed() -> Int64 {
        (ContinuousClock.now - epoch).nanoseconds
    }

    /// A stream whose write has waited this long for its client is dropped.
    var stuckAfter: Duration { max(heartbeat * 2, .seconds(30)) }

    /// One pass over every open stream: those idle for a heartbeat are told to send one, those
    /// whose client stopped reading for `stuckAfter` are dropped. Run about four times a heartbeat.
    func heartbeats() {
        let all = state.withLock { $0.streams.values.flatMap { $0 } }
        let now = elapsed()
        let idle = heartbeat.nanoseconds
        let stuck = stuckAfter.nanoseconds
        for mailbox in all {
            let writing = mailbox.writeStarted.load(ordering: .relaxed)
            if writing != 0 {
                if now - writing >= stuck { mailbox.onStuck() }
            } else if now - mailbox.lastWrite.load(ordering: .relaxed) >= idle {
                mailbox.heartbeatDue()
            }
        }
    }

    private func deliver(channel: String, payload: [UInt8]) {
        guard let user = StreamMessage.user(ofChannel: channel), let message = StreamMessage(payload: payload) else { return }
        if case .revoked(let second) = message {
            revoked(user: user, atSecond: second)
            return
        }
        post(.message(message), to: user)
    }

    /// The user's tokens up to `second` are revoked: the streams they opened end (and those
    /// opened with an API key up to then: "the user's open streams end").
    public func revoked(user: String, atSecond second: Int64) {
        for mailbox in mailboxes(of: user) where mailbox.credentialSecond <= second { mailbox.finish() }
    }

    private func subscriberConnected(_ up: Bool) {
        state.withLock { state in
            state.subscribed = up
            // Back on push: one shared check at once, so nothing published meanwhile is skipped.
            if up { state.checkRequested = true }
        }
        logger.log(level: up ? .info : .warning, up ? "Stream push connected" : "Stream push lost; open streams poll MongoDB")
    }
}

/// One stream's inbox: messages pushed for its user and what the shared check found (bounded;
/// on overflow the stream resets), and the signals that wake its task. Nothing is allocated
/// for it while it is empty.
final class StreamMailbox: Sendable {
    static let capacity = 256

    enum Item: Sendable {
        /// From the user's channel.
        case message(StreamMessage)
        /// What the shared check found written for the user (the stream skips what it sent).
        case found([Notification])
        /// The user's counts, read by the shared poll (no push tells of changes then).
        case counts(Counts)
    }

    /// What woke the stream.
    struct Signals {
        var items: [Item] = []
        var reset = false
        var heartbeat = false
        var finished = false
    }

    private struct State {
        var items: Deque<Item> = []
        var reset = false
        var heartbeat = false
        var finished = false
        var waiter: CheckedContinuation<Void, Never>?

        var ready: Bool { !items.isEmpty || reset || heartbeat || finished }

        mutating func take() -> CheckedContinuation<Void, Never>? {
            defer { waiter = nil }
            return waiter
        }
    }

    let user: String
    /// When the stream's credential was issued, in seconds (`StreamHub.open`).
    let credentialSecond: Int64
    let onStuck: @Sendable () -> Void
    /// On the hub's clock (`StreamHub.elapsed`): when the last frame went out, and when the
    /// write now waiting for the client started (0: none waits).
    let lastWrite: Atomic<Int64>
    let writeStarted = Atomic<Int64>(0)
    private let state = Mutex(State())

    init(user: String, credentialSecond: Int64, onStuck: @escaping @Sendable () -> Void, now: Int64 = 0) {
        self.user = user
        self.credentialSecond = credentialSecond
        self.onStuck = onStuck
        self.lastWrite = Atomic(now)
    }

    func post(_ item: Item) {
        signal { state in
            if state.items.count < Self.capacity { state.items.append(item) } else { state.reset = true }
        }
    }

    func requestReset() { signal { $0.reset = true } }
    func heartbeatDue() { signal { $0.heartbeat = true } }
    func finish() { signal { $0.finished = true } }

    private func signal(_ change: (inout State) -> Void) {
        state.withLock { state in
            change(&state)
            return state.take()
        }?.resume()
    }

    /// Returns what arrived since the last call, once something did (or the task is cancelled).
    @inline(never)
    func next() async -> Signals {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let ready = state.withLock { state -> Bool in
                    if state.ready || Task.isCancelled { return true }
                    state.waiter?.resume()
                    state.waiter = continuation
                    return false
                }
                if ready { continuation.resume() }
            }
        } onCancel: {
            state.withLock { $0.take() }?.resume()
        }
        return state.withLock { state in
            defer { state = State(waiter: state.waiter) }
            return Signals(items: Array(state.items), reset: state.reset, heartbeat: state.heartbeat, finished: state.finished)
        }
    }
}
