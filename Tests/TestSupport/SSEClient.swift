import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

/// One Server-Sent Event as a client sees it (a comment line is `event: ":"`).
public struct SSEEvent: Sendable, Equatable {
    public var event: String
    public var id: String?
    public var data: String
    /// When the client read it (not part of the event's value).
    public var receivedAt = ContinuousClock.now

    public init(event: String, id: String? = nil, data: String) {
        self.event = event
        self.id = id
        self.data = data
    }

    public static func == (lhs: SSEEvent, rhs: SSEEvent) -> Bool {
        lhs.event == rhs.event && lhs.id == rhs.id && lhs.data == rhs.data
    }
}

/// A minimal streaming HTTP client for tests: opens a `text/event-stream` response and hands
/// out its events as they arrive (the test framework's client buffers whole responses).
public final class SSEClient: Sendable {
    private final class Handler: ChannelInboundHandler, Sendable {
        typealias InboundIn = HTTPClientResponsePart
        struct State {
            var status: Int?
            var headers: [(String, String)] = []
            var pending = ""
            var events: [SSEEvent] = []
            var ended = false
        }
        let state = Mutex(State())

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let head):
                state.withLock { state in
                    state.status = Int(head.status.code)
                    state.headers = head.headers.map { ($0.name, $0.value) }
                }
            case .body(let buffer):
                state.withLock { state in
                    state.pending += String(buffer: buffer)
                    while let end = state.pending.range(of: "\n\n") {
                        let frame = String(state.pending[..<end.lowerBound])
                        state.pending = String(state.pending[end.upperBound...])
                        state.events.append(Self.parse(frame))
                    }
                }
            case .end:
                state.withLock { $0.ended = true }
            }
        }

        func channelInactive(context: ChannelHandlerContext) {
            state.withLock { $0.ended = true }
        }

        static func parse(_ frame: String) -> SSEEvent {
            var event = SSEEvent(event: "message", id: nil, data: "")
            for line in frame.split(separator: "\n", omittingEmptySubsequences: false) {
                if line.hasPrefix(":") { event.event = ":"; event.data = String(line.dropFirst()).trimmingLeadingSpace }
                else if line.hasPrefix("event: ") { event.event = String(line.dropFirst(7)) }
                else if line.hasPrefix("id: ") { event.id = String(line.dropFirst(4)) }
                else if line.hasPrefix("data: ") { event.data = String(line.dropFirst(6)) }
                else if line.hasPrefix("retry: ") { event.event = "retry"; event.data = String(line.dropFirst(7)) }
            }
            return event
        }
    }

    private let channel: any Channel
    private let handler: Handler
    private let taken = Mutex(0)

    private init(channel: any Channel, handler: Handler) {
        self.channel = channel
        self.handler = handler
    }

    /// Sends `GET path` with `headers` and returns once the response head arrived.
    public static func open(port: Int, path: String, headers: [(String, String)]) async throws -> SSEClient {
        let handler = Handler()
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(handler)
                }
            }
            .connect(host: "127.0.0.1", port: port).get()
        var fields = HTTPHeaders(headers)
        fields.add(name: "Host", value: "127.0.0.1:\(port)")
        let head = HTTPRequestHead(version: .http1_1, method: .GET, uri: path, headers: fields)
        channel.write(HTTPClientRequestPart.head(head), promise: nil)
        try await channel.writeAndFlush(HTTPClientRequestPart.end(nil)).get()
        let client = SSEClient(channel: channel, handler: handler)
        let clock = ContinuousClock()
        let deadline = clock.now + .seconds(10)
        while client.status == nil && clock.now < deadline { try await Task.sleep(for: .milliseconds(10)) }
        return client
    }

    public var status: Int? { handler.state.withLock { $0.status } }
    public func header(_ name: String) -> String? {
        handler.state.withLock { $0.headers.first { $0.0.lowercased() == name.lowercased() }?.1 }
    }
    public var ended: Bool { handler.state.withLock { $0.ended } }

    /// The next event not returned yet (keep-alive comments included), or nil after `timeout`.
    public func next(timeout: Duration = .seconds(5), skippingComments: Bool = true) async throws -> SSEEvent? {
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        while clock.now < deadline {
            let event = handler.state.withLock { state -> SSEEvent? in
                taken.withLock { index in
                    while index < state.events.count {
                        let event = state.events[index]
                        index += 1
                        if !(skippingComments && event.event == ":") { return event }
                    }
                    return nil
                }
            }
            if let event { return event }
            try await Task.sleep(for: .milliseconds(5))
        }
        return nil
    }

    public func close() {
        channel.close(promise: nil)
    }
}

extension StringProtocol {
    fileprivate var trimmingLeadingSpace: String { String(drop { $0 == " " }) }
}
