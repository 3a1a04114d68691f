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
/// calls the hub while holding its own lock.) Messages go to the
/// streams' mailboxes; when the subscriber connection comes back after a loss, every stream
/// is told to catch up from MongoDB once.
public final class StreamHub: Sendable {
    private struct State {
        var streams: [String: [UInt64: StreamMailbox]] = [:]
        var count = 0
        var nextID: UInt64 = 0
        var subscribed = false
        var closed = false
    }

    private let state = Mutex(State())
    private let gateway: RedisGateway
    let maxConnections: Int
    /// The largest `retry:` a stream ends with (`STREAM_RETRY_MAX_MS`).
    let retryMax: Duration
    let metrics: ServiceMetrics
    let logger: Logger
    /// Set once by `attach` (the subscriber needs the hub's callbacks, the hub the subscriber).
    private let subscriberBox = Mutex<RedisSubscriber?>(nil)

    public init(gateway: RedisGateway, maxConnections: Int, retryMax: Duration = .seconds(10), metrics: ServiceMetrics, logger: Logger) {
        self.gateway = gateway
        self.maxConnections = maxConnections
        self.retryMax = retryMax
        self.metrics = metrics
        self.logger = logger
    }

    /// Builds the subscriber connection that feeds this hub (run it as a service).
    public func makeSubscriber(
        configuration: RedisConfiguration, eventLoopGroup: any EventLoopGroup, sentinel: SentinelResolver?,
        tracking: InvalidationTracking? = nil
    ) -> RedisSubscriber {
        // With Sentinel, each connection goes to the current master.
        var endpoint: RedisSubscriber.Endpoint?
        if let sentinel {
            endpoint = { @Sendable (_: Int, eventLoop: any EventLoop, deadline: NIODeadline) async throws -> RedisAddress in
                try await sentinel.master(on: eventLoop, deadline: deadline)
            }
        }
        let subscriber = RedisSubscriber(
            configuration: configuration, eventLoopGroup: eventLoopGroup, logger: logger, endpoint: endpoint, tracking: tracking,
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

    /// A mailbox for a new stream of `user`; nil beyond `STREAM_MAX_CONNECTIONS` or while shutting down.
    /// `credentialSecond`: when the stream's credential was issued (a user token's `iat`; for an
    /// API key, the second the stream opened): a revocation at or after it ends the stream.
    func open(user: String, credentialSecond: Int64) -> StreamMailbox? {
        let (mailbox, count) = state.withLock { state -> (StreamMailbox?, Int) in
            guard !state.closed, state.count < maxConnections else { return (nil, state.count) }
            state.nextID &+= 1
            let mailbox = StreamMailbox(id: state.nextID, user: user, credentialSecond: credentialSecond)
            if state.streams[user] == nil { subscriberBox.withLock { $0 }?.subscribe(StreamMessage.channel(user)) }
            state.streams[user, default: [:]][mailbox.id] = mailbox
            state.count += 1
            return (mailbox, state.count)
        }
        metrics.streamsOpen(count)
        return mailbox
    }

    func close(_ mailbox: StreamMailbox) {
        let count = state.withLock { state -> Int in
            guard state.streams[mailbox.user]?.removeValue(forKey: mailbox.id) != nil else { return state.count }
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
            return state.streams.values.flatMap(\.values)
        }
        for mailbox in all { mailbox.finish() }
    }

    public var openStreams: Int { state.withLock { $0.count } }

    /// Whether a stream would be accepted now (HEAD answers as GET would, without opening one).
    public var hasRoom: Bool { state.withLock { !$0.closed && $0.count < maxConnections } }

    private func deliver(channel: String, payload: [UInt8]) {
        guard let user = StreamMessage.user(ofChannel: channel), let message = StreamMessage(payload: payload) else { return }
        if case .revoked(let second) = message {
            revoked(user: user, atSecond: second)
            return
        }
        let mailboxes = state.withLock { $0.streams[user].map { Array($0.values) } ?? [] }
        for mailbox in mailboxes { mailbox.post(message) }
    }

    /// The user's tokens up to `second` are revoked: the streams they opened end (and those
    /// opened with an API key up to then: "the user's open streams end").
    public func revoked(user: String, atSecond second: Int64) {
        let ending = state.withLock { $0.streams[user].map { $0.values.filter { $0.credentialSecond <= second } } ?? [] }
        for mailbox in ending { mailbox.finish() }
    }

    private func subscriberConnected(_ up: Bool) {
        let all = state.withLock { state -> [StreamMailbox] in
            state.subscribed = up
            return state.streams.values.flatMap(\.values)
        }
        logger.log(level: up ? .info : .warning, up ? "Stream push connected" : "Stream push lost; open streams poll MongoDB")
        // Back on push: one catch-up query each, so nothing published meanwhile is skipped.
        for mailbox in all { up ? mailbox.requestCatchUp() : mailbox.wake() }
    }
}

/// One stream's inbox: messages pushed for its user (bounded; on overflow the stream catches
/// up from MongoDB instead), and the signals that wake its loop.
final class StreamMailbox: Sendable {
    static let capacity = 256

    private struct State {
        var messages: Deque<StreamMessage> = []
        var catchUp = false
        var finished = false
        var waiter: CheckedContinuation<Void, Never>?

        mutating func take() -> CheckedContinuation<Void, Never>? {
            defer { waiter = nil }
            return waiter
        }
    }

    let id: UInt64
    let user: String
    /// When the stream's credential was issued, in seconds (`StreamHub.open`).
    let credentialSecond: Int64
    private let state = Mutex(State())

    init(id: UInt64, user: String, credentialSecond: Int64) {
        self.id = id
        self.user = user
        self.credentialSecond = credentialSecond
    }

    func post(_ message: StreamMessage) {
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            if state.messages.count < Self.capacity { state.messages.append(message) } else { state.catchUp = true }
            return state.take()
        }
        waiter?.resume()
    }

    func requestCatchUp() {
        state.withLock { state in
            state.catchUp = true
            return state.take()
        }?.resume()
    }

    func wake() {
        state.withLock { $0.take() }?.resume()
    }

    func finish() {
        state.withLock { state in
            state.finished = true
            return state.take()
        }?.resume()
    }

    /// What has arrived since the last call.
    func drain() -> (messages: [StreamMessage], catchUp: Bool, finished: Bool) {
        state.withLock { state in
            defer {
                state.messages.removeAll()
                state.catchUp = false
            }
            return (Array(state.messages), state.catchUp, state.finished)
        }
    }

    /// Returns when something arrives, after `limit`, or when the task is cancelled.
    func wait(upTo limit: Duration) async {
        await withTaskCancellationHandler {
            await waitUncancelled(upTo: limit)
        } onCancel: {
            wake()
        }
    }

    private func waitUncancelled(upTo limit: Duration) async {
        if Task.isCancelled { return }
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let ready = state.withLock { state -> Bool in
                if !state.messages.isEmpty || state.catchUp || state.finished { return true }
                state.waiter?.resume()
                state.waiter = continuation
                return false
            }
            if ready {
                continuation.resume()
                return
            }
            Task { [weak self] in
                try? await Task.sleep(for: limit)
                self?.wake()
            }
        }
    }
}
