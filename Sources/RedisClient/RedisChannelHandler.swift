internal import NIOCore

/// A command on its way out, with the promise its reply completes and its deadline.
struct RedisRequest {
    var command: RedisCommand
    var promise: EventLoopPromise<RESPValue>
    var deadline: NIODeadline
}

/// Pipelines commands on one channel and answers their promises in FIFO order.
///
/// Lives on one event loop, so its state needs no locks. Any failure (protocol error,
/// a missed deadline, the channel closing) fails every pending promise and closes the
/// channel: after that, replies could no longer be matched to requests.
///
/// Commands come in batches from `RedisConnection` straight to `write(_:)`, not through the
/// pipeline: a batch is encoded into one buffer and written once. Through the pipeline each
/// command cost a boxed `NIOAny`, a buffer, a write promise and a callback on it.
final class RedisChannelHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private struct Pending {
        var promise: EventLoopPromise<RESPValue>
        var deadline: NIODeadline
    }

    private let reader = RESPReplyReader()
    private var pending = CircularBuffer<Pending>()
    /// One timer for the whole pipeline, never later than the earliest pending deadline. A
    /// timer per command cost every call a scheduled task, a promise and a cancellation
    /// (measurable CPU per Redis call); this one is armed when the earliest deadline moves
    /// earlier and otherwise only re-armed when it fires.
    private var timer: Scheduled<Void>?
    private var timerDeadline: NIODeadline?
    /// Set once the channel is unusable; later writes fail with it at once.
    private var failure: RedisError?
    private var context: ChannelHandlerContext?

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.failAll(.connectionClosed)
        self.context = nil
    }

    /// On the event loop: `requests` join the pipeline in order and go out as one buffer,
    /// flushed once. On a connection already failed they fail at once.
    func write(_ requests: [RedisRequest]) {
        guard let context, failure == nil else {
            let error = failure ?? .connectionClosed
            for request in requests { request.promise.fail(error) }
            return
        }
        var buffer = context.channel.allocator.buffer(capacity: 64 * requests.count)
        for request in requests {
            pending.append(Pending(promise: request.promise, deadline: request.deadline))
            arm(for: request.deadline, context: context)
            RedisCommandEncoder.encode(request.command, into: &buffer)
        }
        // A failed write closes the channel: `channelInactive` then fails what is pending.
        context.writeAndFlush(wrapOutboundOut(buffer), promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = self.unwrapInboundIn(data)
        do {
            try reader.feed(buffer)
            while let reply = try reader.next() {
                guard let request = pending.popFirst() else {
                    throw RedisError.protocolError("reply without a request")
                }
                request.promise.succeed(reply)
            }
        } catch {
            fail(error as? RedisError ?? .protocolError("\(error)"))
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        failAll(.connectionClosed)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        fail(.connectionClosed)
    }

    /// Makes sure the timer fires by `deadline`.
    private func arm(for deadline: NIODeadline, context: ChannelHandlerContext) {
        if let armed = timerDeadline, armed <= deadline { return }
        timer?.cancel()
        timerDeadline = deadline
        timer = context.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) { [weak self] () -> Void in
            self?.timerFired()
        }
    }

    /// A call whose deadline passed fails with `.timeout` (the calls pipelined with it are only
    /// `.aborted`), then the connection closes. Otherwise the calls it was armed for were
    /// answered: it is armed again for the earliest call still waiting.
    private func timerFired() {
        timer = nil
        timerDeadline = nil
        let now = NIODeadline.now()
        if let index = pending.firstIndex(where: { $0.deadline <= now }) {
            let late = pending.remove(at: index)
            late.promise.fail(RedisError.timeout)
            failAll(.aborted(RedisError.timeout.description))
            context?.close(promise: nil)
        } else if let earliest = pending.lazy.map(\.deadline).min(), let context {
            arm(for: earliest, context: context)
        }
    }

    private func fail(_ error: RedisError) {
        failAll(error)
        context?.close(promise: nil)
    }

    /// The first pending call gets `error`; the calls pipelined behind it get `.aborted`, so
    /// one connection failure is counted once by whoever counts failures.
    private func failAll(_ error: RedisError) {
        if failure == nil { failure = error }
        var first = true
        timer?.cancel()
        timer = nil
        timerDeadline = nil
        while let request = pending.popFirst() {
            request.promise.fail(first ? error : .aborted(error.description))
            first = false
        }
    }
}

@available(*, unavailable)
extension RedisChannelHandler: Sendable {}
