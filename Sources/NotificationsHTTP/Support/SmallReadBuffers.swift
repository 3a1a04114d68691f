public import HummingbirdCore
public import Logging
public import NIOCore

/// HTTP/1.1 connections whose receive buffer starts small.
///
/// SwiftNIO keeps each connection's last receive buffer for its next read, sized by the
/// channel's receive allocator: 2 KiB by default, kept for as long as the connection lives. A
/// stream's connection reads one request of a few hundred bytes and then nothing, so that
/// buffer was about a tenth of what an idle stream costs. Starting at 256 bytes (the allocator
/// grows it after a read that fills it: a larger request or body comes in bigger reads after
/// the first) keeps it small.
public struct SmallReadBuffers<Inner: ServerChildChannel>: ServerChildChannel {
    public typealias Value = Inner.Value

    let inner: Inner

    /// The receive allocator of every connection: from 256 bytes, growing to 64 KiB for large reads.
    static var allocator: AdaptiveRecvByteBufferAllocator { AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 256, maximum: 65536) }

    public func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        channel.setOption(ChannelOptions.recvAllocator, value: Self.allocator).flatMap {
            inner.setup(channel: channel, logger: logger)
        }
    }

    public func handle(value: Value, logger: Logger) async {
        await inner.handle(value: value, logger: logger)
    }
}

extension HTTPServerBuilder {
    /// HTTP/1.1 as `http1(configuration:)`, with `SmallReadBuffers`.
    public static func http1SmallReadBuffers(configuration: HTTP1Channel.Configuration) -> HTTPServerBuilder {
        .init { responder in SmallReadBuffers(inner: HTTP1Channel(responder: responder, configuration: configuration)) }
    }
}
