internal import Foundation
internal import HTTPTypes
internal import Hummingbird
internal import NIOCore
internal import NotificationsCore

/// `GET /v1/users/{userId}/notifications/stream`: Server-Sent Events (`NotificationStream`).
struct StreamRoutes {
    let feed: NotificationFeed
    let store: any NotificationStore
    let hub: StreamHub
    let heartbeat: Duration
    let pollInterval: Duration
    let metrics: ServiceMetrics
    let revocations: TokenRevocations

    func register(on routes: RouteRegistrar<some RouterMethods<AppRequestContext>>) {
        routes.on(.get, "/users/{userId}/notifications/stream", access: .userOrQueryToken(.feedRead), stream)
    }

    @Sendable func stream(_ request: Request, context: AppRequestContext) async throws -> Response {
        let user = try NotificationRoutes.userID(context)
        // An empty Last-Event-ID is no resume; anything else must be a notification id.
        let lastEventID = try request.headers[.lastEventID].map { $0.trimmingCharacters(in: .whitespaces) }.flatMap { text in
            text.isEmpty ? nil : try Validation.notificationID(text, field: "Last-Event-ID")
        }
        let headers: HTTPFields = [.contentType: "text/event-stream", .cacheControl: "no-cache", .xAccelBuffering: "no"]
        // HEAD (uptime checks) learns what GET would answer, without holding a stream.
        if request.method == .head {
            guard hub.hasRoom else { throw Self.tooManyStreams() }
            return Response(status: .ok, headers: headers)
        }
        guard
            let stream = NotificationStream.open(
                user: user, credentialSecond: context.userToken?.issuedAt, revocations: revocations, store: store, feed: feed, hub: hub,
                heartbeat: heartbeat, pollInterval: pollInterval)
        else {
            metrics.requestShed(.streams)
            throw Self.tooManyStreams()
        }
        // Frames go through a bounded buffer: a client that stops reading fills it and is
        // dropped (its stream ends), instead of holding memory or a stream slot forever.
        let (frames, continuation) = AsyncStream<ByteBuffer>.makeStream(bufferingPolicy: .bufferingOldest(Self.bufferedFrames))
        // Detached: the stream outlives the request, and must not inherit its per-request Redis
        // scope (after one failed call, every later cache call of the stream would skip Redis).
        let producer = Task.detached {
            defer {
                stream.close()
                continuation.finish()
            }
            do {
                try await stream.run(resumeAfter: lastEventID) { frame in
                    guard case .enqueued = continuation.yield(ByteBuffer(string: frame)) else { throw SlowClient() }
                }
            } catch is SlowClient {
                // The client is gone or stopped reading: nobody to tell.
            } catch {
                // The stream's own failure (MongoDB unusable for a poll): tell the client when
                // to come back, spread, so a failing instance's clients do not return at once.
                _ = continuation.yield(ByteBuffer(string: hub.retryLine()))
            }
        }
        // The client left (or the server stopped writing): stop the stream.
        continuation.onTermination = { _ in producer.cancel() }
        return Response(status: .ok, headers: headers, body: ResponseBody(asyncSequence: frames))
    }

    static func tooManyStreams() -> Problem {
        Problem.overloaded("This instance holds as many streams as it may; retry, possibly elsewhere.")
    }

    /// Frames a stream may have waiting for its client before it is dropped.
    static let bufferedFrames = 64

    struct SlowClient: Error {}
}

extension HTTPField.Name {
    static let lastEventID = HTTPField.Name("Last-Event-ID")!
    static let xAccelBuffering = HTTPField.Name("X-Accel-Buffering")!
}
