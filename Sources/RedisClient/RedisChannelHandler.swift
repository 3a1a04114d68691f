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
final class RedisChannelHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = RedisRequest
    typealias OutboundOut = ByteBuffer

    private struct Pending {
        var id: UInt64
        var promise: EventLoopPromise<RESPValue>
        var timeout: Scheduled<Void>?
    }

    private let reader = RESPReplyReader()
    private var pending = CircularBuffer<Pending>()
    private var nextID: UInt64 = 0
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

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let request = self.unwrapOutboundIn(data)
        if let failure {
            request.promise.fail(failure)
            promise?.fail(failure)
            return
        }
        nextID &+= 1
        let id = nextID
        let timeout = context.eventLoop.assumeIsolated().scheduleTask(deadline: request.deadline) { [weak self] () -> Void in
            self?.deadlineMissed(id: id)
        }
        pending.append(Pending(id: id, promise: request.promise, timeout: timeout))
        var buffer = context.channel.allocator.buffer(capacity: 64)
        RedisCommandEncoder.encode(request.command, into: &buffer)
        context.write(self.wrapOutboundOut(buffer), promise: promise)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = self.unwrapInboundIn(data)
        do {
            try reader.feed(buffer)
            while let reply = try reader.next() {
                guard let request = pending.popFirst() else {
                    throw RedisError.protocolError("reply without a request")
                }
                request.timeout?.cancel()
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

    /// A deadline passed: that call fails with `.timeout` (calls ahead of it in the pipeline
    /// were not late, so they are only `.aborted`), then the connection closes.
    private func deadlineMissed(id: UInt64) {
        guard let index = pending.firstIndex(where: { $0.id == id }) else { return }
        let late = pending.remove(at: index)
        late.timeout?.cancel()
        late.promise.fail(RedisError.timeout)
        failAll(.aborted(RedisError.timeout.description))
        context?.close(promise: nil)
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
        while let request = pending.popFirst() {
            request.timeout?.cancel()
            request.promise.fail(first ? error : .aborted(error.description))
            first = false
        }
    }
}

@available(*, unavailable)
extension RedisChannelHandler: Sendable {}
