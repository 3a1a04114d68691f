public import NIOCore
internal import NIOPosix
internal import Synchronization

/// One TCP connection to Redis, pipelining commands through `RedisChannelHandler`.
///
/// Commands sent while the connection's event loop is busy are written together with one
/// flush (automatic pipelining): under load, one wake-up of the loop, one `writev` and one
/// read by Redis carry many commands instead of one each.
public final class RedisConnection: Sendable {
    let channel: any Channel
    /// The channel's handler, which `drain` hands each batch to on the event loop.
    private let handler: NIOLoopBound<RedisChannelHandler>
    private let outbox = Mutex(Outbox())

    private struct Outbox {
        var requests: [RedisRequest] = []
        /// A drain is on the event loop's queue: later sends join it.
        var draining = false
    }

    init(channel: any Channel, handler: NIOLoopBound<RedisChannelHandler>) {
        self.channel = channel
        self.handler = handler
    }

    public var isActive: Bool { channel.isActive }

    /// Connects, then authenticates and selects the database, all before `deadline` (the
    /// deadline of the call that needed the connection).
    static func connect(
        to configuration: RedisConfiguration, on eventLoop: any EventLoop, deadline: NIODeadline
    ) async throws(RedisError) -> RedisConnection {
        let channel: any Channel
        do {
            channel = try await ClientBootstrap(group: eventLoop)
                .connectTimeout(max(.milliseconds(1), deadline - .now()))
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(RedisChannelHandler())
                    }
                }
                .connect(host: configuration.host, port: configuration.port)
                .get()
        } catch {
            throw .connectionRefused("\(configuration.host):\(configuration.port): \(error)")
        }
        let handler: NIOLoopBound<RedisChannelHandler>
        do {
            handler = try await channel.eventLoop.submit {
                NIOLoopBound(try channel.pipeline.syncOperations.handler(type: RedisChannelHandler.self), eventLoop: channel.eventLoop)
            }.get()
        } catch {
            channel.close(promise: nil)
            throw .connectionClosed
        }
        let connection = RedisConnection(channel: channel, handler: handler)
        do {
            if let password = configuration.password {
                let auth = configuration.username.map { ["AUTH", $0, password] } ?? ["AUTH", password]
                _ = try await connection.send(RedisCommand(auth[0], Array(auth.dropFirst())), deadline: deadline)
            }
            if configuration.database != 0 {
                _ = try await connection.send(RedisCommand("SELECT", [String(configuration.database)]), deadline: deadline)
            }
        } catch {
            connection.close()
            throw error
        }
        return connection
    }

    /// Sends one command and waits for its reply until `deadline`. An error reply throws `RedisError.server`.
    public func send(_ command: RedisCommand, deadline: NIODeadline) async throws(RedisError) -> RESPValue {
        guard deadline > .now() else { throw .timeout }
        let reply = try await sendRaw(command, deadline: deadline)
        if case .error(let text) = reply { throw RedisError.fromErrorReply(text) }
        return reply
    }

    /// `ASKING`, then `command`, written together (nothing of another caller can come between
    /// them): the node answers `command` for a slot it is importing.
    public func send(asking command: RedisCommand, deadline: NIODeadline) async throws(RedisError) -> RESPValue {
        guard deadline > .now() else { throw .timeout }
        let asking = channel.eventLoop.makePromise(of: RESPValue.self)
        let promise = channel.eventLoop.makePromise(of: RESPValue.self)
        enqueue(
            RedisRequest(command: RedisCommand("ASKING"), promise: asking, deadline: deadline),
            then: RedisRequest(command: command, promise: promise, deadline: deadline))
        let askingReply = try await wait(for: asking)
        if case .error(let text) = askingReply { throw RedisError.fromErrorReply(text) }
        let reply = try await wait(for: promise)
        if case .error(let text) = reply { throw RedisError.fromErrorReply(text) }
        return reply
    }

    /// Queues one command and returns its reply's future at once (an error reply is `.error`,
    /// not a failure): for calls sent together and awaited as one (`RedisGateway.evaluateTogether`).
    public func submit(_ command: RedisCommand, deadline: NIODeadline) -> EventLoopFuture<RESPValue> {
        let promise = channel.eventLoop.makePromise(of: RESPValue.self)
        enqueue(RedisRequest(command: command, promise: promise, deadline: deadline))
        return promise.futureResult
    }

    /// Sends one command; an error reply is returned as `.error`, not thrown.
    func sendRaw(_ command: RedisCommand, deadline: NIODeadline) async throws(RedisError) -> RESPValue {
        let promise = channel.eventLoop.makePromise(of: RESPValue.self)
        enqueue(RedisRequest(command: command, promise: promise, deadline: deadline))
        return try await wait(for: promise)
    }

    private func wait(for promise: EventLoopPromise<RESPValue>) async throws(RedisError) -> RESPValue {
        do {
            return try await withTaskCancellationHandler {
                try await promise.futureResult.get()
            } onCancel: {
                // The reply may still come and is then dropped; the connection stays usable.
                promise.fail(RedisError.cancelled)
            }
        } catch let error as RedisError {
            throw error
        } catch {
            throw .connectionClosed
        }
    }

    public func close() {
        channel.close(promise: nil)
    }

    /// Queues `request` (and `next` right behind it, with nothing between) for the next drain.
    private func enqueue(_ request: RedisRequest, then next: RedisRequest? = nil) {
        let startDrain = outbox.withLock { outbox in
            outbox.requests.append(request)
            if let next { outbox.requests.append(next) }
            defer { outbox.draining = true }
            return !outbox.draining
        }
        if startDrain { channel.eventLoop.execute { self.drain() } }
    }

    /// On the event loop: writes every queued command as one buffer, flushed once.
    private func drain() {
        let requests = outbox.withLock { outbox in
            outbox.draining = false
            return outbox.requests.take()
        }
        handler.value.write(requests)
    }
}

extension Array {
    /// The elements, leaving the array empty (its storage moves out, no copy).
    fileprivate mutating func take() -> [Element] {
        var taken: [Element] = []
        swap(&self, &taken)
        return taken
    }
}
