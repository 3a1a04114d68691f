public import Logging
public import NIOCore
internal import NIOPosix
internal import ServiceLifecycle
internal import Synchronization

/// One connection in RESP2 subscriber mode: `SUBSCRIBE`/`UNSUBSCRIBE` as channels come and
/// go, pushed messages parsed by hiredis's reader and handed to `onMessage`.
///
/// It reconnects with backoff and subscribes again to every channel; `onConnected(true/false)`
/// tells the owner when pushes can (not) be relied on. With `tracking`, it also carries Redis
/// client-side-caching invalidations (see `InvalidationTracking`). A PING every few seconds, answered
/// within the operation deadline, detects a Redis that stopped answering without closing the
/// socket (a paused or hung server): the connection is then dropped and rebuilt.
public final class RedisSubscriber: ChannelSubscriber {
    private struct State {
        var channels: Set<String> = []
        var connection: (any Channel)?
        var stopped = false
    }

    private let configuration: RedisConfiguration
    private let eventLoopGroup: any EventLoopGroup
    private let logger: Logger
    private let state = Mutex(State())
    private let onMessage: @Sendable (String, [UInt8]) -> Void
    private let onConnected: @Sendable (Bool) -> Void
    let pingInterval: Duration
    /// Where to connect for the n-th session (nil: `configuration`'s host and port).
    public typealias Endpoint = @Sendable (_ attempt: Int, _ eventLoop: any EventLoop, _ deadline: NIODeadline) async throws -> RedisAddress
    private let endpoint: Endpoint?
    private let tracking: InvalidationTracking?
    /// Sharded pub/sub (`SSUBSCRIBE`, Redis Cluster): one command per channel, as each names its slot.
    private let sharded: Bool
    /// A sharded channel the node stopped serving (its slot moved: a `sunsubscribe` we did not ask
    /// for), or nil for a `MOVED` answer to a subscription: the owner must look up the map again.
    private let onLost: (@Sendable (_ channel: String?) -> Void)?

    public init(
        configuration: RedisConfiguration, eventLoopGroup: any EventLoopGroup, logger: Logger, pingInterval: Duration = .seconds(2),
        endpoint: Endpoint? = nil, tracking: InvalidationTracking? = nil, sharded: Bool = false,
        onMessage: @escaping @Sendable (_ channel: String, _ payload: [UInt8]) -> Void, onConnected: @escaping @Sendable (Bool) -> Void,
        onLost: (@Sendable (_ channel: String?) -> Void)? = nil
    ) {
        self.sharded = sharded
        self.onLost = onLost
        self.endpoint = endpoint
        self.tracking = tracking
        self.configuration = configuration
        self.eventLoopGroup = eventLoopGroup
        self.logger = logger
        self.pingInterval = pingInterval
        self.onMessage = onMessage
        self.onConnected = onConnected
    }

    public func subscribe(_ channel: String) {
        let connection = state.withLock { state -> (any Channel)? in
            guard state.channels.insert(channel).inserted else { return nil }
            return state.connection
        }
        connection.map { Self.send(RedisCommand(sharded ? "SSUBSCRIBE" : "SUBSCRIBE", [channel]), on: $0) }
    }

    public func unsubscribe(_ channel: String) {
        let connection = state.withLock { state -> (any Channel)? in
            guard state.channels.remove(channel) != nil else { return nil }
            return state.connection
        }
        connection.map { Self.send(RedisCommand(sharded ? "SUNSUBSCRIBE" : "UNSUBSCRIBE", [channel]), on: $0) }
    }

    /// Drops the connection (tests, and a breaker that opened): the run loop reconnects.
    public func disconnect() {
        state.withLock { $0.connection }?.close(promise: nil)
    }

    /// Ends `run` for good (a cluster node that is no longer a master).
    public func stop() {
        state.withLock { state in
            state.stopped = true
            return state.connection
        }?.close(promise: nil)
    }

    private var isStopped: Bool { state.withLock { $0.stopped } }

    /// A `sunsubscribe` pushed for a channel we still want: the node gave up the channel's slot.
    private func unsubscribedByServer(_ channel: String) {
        guard state.withLock({ $0.channels.contains(channel) }) else { return }
        onLost?(channel)
    }

    /// Connects, subscribes, and keeps doing so until graceful shutdown.
    public func run() async throws {
        await cancelWhenGracefulShutdown {
            var attempt = 0
            while !Task.isCancelled && !self.isStopped {
                do {
                    try await self.session(attempt: attempt)
                    attempt = 0
                } catch {
                    if attempt == 0 { self.logger.warning("Redis subscriber connection lost", metadata: ["error": "\(error)"]) }
                    attempt += 1
                }
                try? await Task.sleep(for: .milliseconds(Int64(50 << min(attempt, 5)).clamped(to: 50...2000)))
            }
        }
    }

    /// One connection's life: connect, authenticate, subscribe to every channel, then watch it.
    private func session(attempt: Int) async throws {
        var onUnsubscribed: (@Sendable (String) -> Void)?
        var onMoved: (@Sendable () -> Void)?
        if sharded {
            onUnsubscribed = { [weak self] channel in self?.unsubscribedByServer(channel) }
            onMoved = { [onLost] in onLost?(nil) }
        }
        let handler = RedisSubscriberHandler(
            onMessage: onMessage, onInvalidate: tracking?.onInvalidate, onUnsubscribed: onUnsubscribed, onMoved: onMoved)
        let timeout = TimeAmount.milliseconds(configuration.operationTimeoutMilliseconds)
        let eventLoop = eventLoopGroup.any()
        let address = try await endpoint?(attempt, eventLoop, .now() + timeout) ?? RedisAddress(host: configuration.host, port: configuration.port)
        let channel = try await ClientBootstrap(group: eventLoop)
            .connectTimeout(timeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(handler) }
            }
            .connect(host: address.host, port: address.port)
            .get()
        if let tracking {
            // The near cache stops being trusted the moment the connection closes, not at the next PING.
            channel.closeFuture.whenComplete { _ in tracking.onActive(false) }
        }
        defer { channel.close(promise: nil) }
        if let password = configuration.password {
            Self.send(RedisCommand("AUTH", configuration.username.map { [$0, password] } ?? [password]), on: channel)
        }
        var channels = state.withLock { state -> Set<String> in
            state.connection = channel
            return state.channels
        }
        defer { state.withLock { $0.connection = nil } }
        if tracking != nil {
            // Its answer (the id invalidations are redirected to) comes before any pushed message.
            Self.send(RedisCommand("CLIENT", ["ID"]), on: channel)
            if sharded {
                Self.send(RedisCommand("SUBSCRIBE", [InvalidationTracking.channel]), on: channel)
            } else {
                channels.insert(InvalidationTracking.channel)
            }
        }
        // An empty SUBSCRIBE is an error; the PING confirms the connection (and AUTH) either way.
        if sharded {
            // Each SSUBSCRIBE names channels of one slot: one per channel.
            Self.send(channels.sorted().map { RedisCommand("SSUBSCRIBE", [$0]) }, on: channel)
        } else if !channels.isEmpty {
            Self.send(RedisCommand("SUBSCRIBE", channels.sorted()), on: channel)
        }
        try await ping(handler, on: channel, within: timeout)
        var trackingConnection: RedisConnection?
        defer {
            trackingConnection?.close()
            // Also when the subscriber closed between `startTracking`'s check and its `active(true)`.
            tracking?.onActive(false)
        }
        if let tracking {
            trackingConnection = try await startTracking(tracking, handler: handler, subscriber: channel, at: address, within: timeout)
        }
        onConnected(true)
        defer { onConnected(false) }
        while channel.isActive && !Task.isCancelled && !isStopped {
            try? await Task.sleep(for: pingInterval)
            try await ping(handler, on: channel, within: timeout)
        }
    }

    /// Opens the connection that turns tracking on for the subscriber's id; either connection
    /// closing closes the other (the session then ends and starts over).
    private func startTracking(
        _ tracking: InvalidationTracking, handler: RedisSubscriberHandler, subscriber: any Channel, at address: RedisAddress, within timeout: TimeAmount
    ) async throws -> RedisConnection {
        guard let clientID = handler.clientID.withLock({ $0 }) else { throw RedisError.protocolError("CLIENT ID was not answered") }
        var target = configuration
        target.host = address.host
        target.port = address.port
        let connection = try await RedisConnection.connect(to: target, on: subscriber.eventLoop, deadline: .now() + timeout)
        connection.channel.closeFuture.whenComplete { _ in subscriber.close(promise: nil) }
        subscriber.closeFuture.whenComplete { _ in connection.close() }
        do {
            _ = try await connection.send(tracking.command(redirectingTo: clientID), deadline: .now() + timeout)
        } catch {
            connection.close()
            throw error
        }
        // Pushes are only trusted from here; a subscriber that closed meanwhile already said false.
        guard subscriber.isActive, connection.isActive else { throw RedisError.connectionClosed }
        tracking.onActive(true)
        return connection
    }

    /// Sends a PING and waits for its answer; closes the connection and throws after `within`.
    private func ping(_ handler: RedisSubscriberHandler, on channel: any Channel, within limit: TimeAmount) async throws {
        let before = handler.pongs.load(ordering: .relaxed)
        Self.send(RedisCommand("PING"), on: channel)
        let deadline = NIODeadline.now() + limit
        while handler.pongs.load(ordering: .relaxed) <= before {
            guard channel.isActive else { throw RedisError.connectionClosed }
            guard NIODeadline.now() < deadline else {
                channel.close(promise: nil)
                throw RedisError.timeout
            }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    static func send(_ command: RedisCommand, on channel: any Channel) {
        send([command], on: channel)
    }

    /// Many commands in one write.
    static func send(_ commands: [RedisCommand], on channel: any Channel) {
        guard !commands.isEmpty else { return }
        var buffer = channel.allocator.buffer(capacity: 64 * commands.count)
        for command in commands { RedisCommandEncoder.encode(command, into: &buffer) }
        channel.writeAndFlush(buffer, promise: nil)
    }
}

/// Parses a subscriber connection's replies: pushed messages go to `onMessage`, PING answers
/// are counted (the liveness check), an error reply or a protocol error closes the channel.
final class RedisSubscriberHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer

    // Used on the channel's event loop only; the lock is never contended.
    private let parser = Mutex<RESPReplyReader>(RESPReplyReader())
    private let onMessage: @Sendable (String, [UInt8]) -> Void
    private let onInvalidate: (@Sendable ([[UInt8]]?) -> Void)?
    private let onUnsubscribed: (@Sendable (String) -> Void)?
    private let onMoved: (@Sendable () -> Void)?
    /// PING answers seen: the liveness check.
    let pongs = Atomic<Int>(0)
    /// The answer to `CLIENT ID` (sent before subscribing, so it is the one integer reply).
    let clientID = Mutex<Int64?>(nil)

    /// - Parameters:
    ///   - onUnsubscribed: sharded pub/sub: each `sunsubscribe` (asked for or not).
    ///   - onMoved: sharded pub/sub: a `MOVED` answer to a subscription (kept connected: the other channels are fine).
    init(
        onMessage: @escaping @Sendable (String, [UInt8]) -> Void, onInvalidate: (@Sendable ([[UInt8]]?) -> Void)? = nil,
        onUnsubscribed: (@Sendable (String) -> Void)? = nil, onMoved: (@Sendable () -> Void)? = nil
    ) {
        self.onMessage = onMessage
        self.onInvalidate = onInvalidate
        self.onUnsubscribed = onUnsubscribed
        self.onMoved = onMoved
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        do {
            let messages = try parser.withLock { reader throws(RedisError) -> [RESPValue] in
                try reader.feed(buffer)
                var replies: [RESPValue] = []
                while let reply = try reader.next() { replies.append(reply) }
                return replies
            }
            for reply in messages { handle(reply, context: context) }
        } catch {
            context.close(promise: nil)
        }
    }

    private func handle(_ reply: RESPValue, context: ChannelHandlerContext) {
        switch reply {
        case .array(let parts) where parts.count == 3 && parts[0].string == "message" && parts[1].string == InvalidationTracking.channel:
            if let onInvalidate, let keys = InvalidationTracking.keys(in: parts[2]) { onInvalidate(keys) }
        case .array(let parts) where parts.count == 3 && (parts[0].string == "message" || parts[0].string == "smessage"):
            if let channel = parts[1].string, case .bulkString(let payload) = parts[2] { onMessage(channel, payload) }
        case .array(let parts) where parts.count == 3 && parts[0].string == "sunsubscribe":
            if let channel = parts[1].string { onUnsubscribed?(channel) }
        case .array(let parts) where parts.first?.string == "pong":
            pongs.wrappingAdd(1, ordering: .relaxed)
        case .simpleString("PONG"):
            pongs.wrappingAdd(1, ordering: .relaxed)
        case .integer(let id):
            clientID.withLock { $0 = $0 ?? id }
        case .error(let text) where onMoved != nil && text.hasPrefix("MOVED"):
            onMoved?()
        case .error:
            context.close(promise: nil)
        default:
            break
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}

extension Comparable {
    fileprivate func clamped(to range: ClosedRange<Self>) -> Self { min(max(self, range.lowerBound), range.upperBound) }
}
