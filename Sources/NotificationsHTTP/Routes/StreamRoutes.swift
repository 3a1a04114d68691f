internal import Foundation
internal import HTTPTypes
internal import Hummingbird
internal import NIOCore
internal import NotificationsCore

/// `GET /v1/users/{userId}/notifications/stream`: Server-Sent Events (`NotificationStream`).
struct StreamRoutes {
    let feed: NotificationFeed
    let queries: StreamQueries
    let hub: StreamHub
    let pollInterval: Duration
    let metrics: ServiceMetrics

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
        let channel = context.channel
        let stream: NotificationStream
        do {
            stream = try NotificationStream.open(
                user: user, credentialSecond: context.userToken?.issuedAt, queries: queries, feed: feed, hub: hub, pollInterval: pollInterval,
                onStuck: { channel.close(promise: nil) })
        } catch .full {
            metrics.requestShed(.streams)
            throw Self.tooManyStreams()
        } catch .tooFast {
            metrics.requestShed(.streamAccept)
            // Spread, so the refused part of a storm does not come back in one second.
            throw Problem.overloaded(
                "This instance is accepting new streams as fast as it may; retry after the delay given.", retryAfterSeconds: Int.random(in: 1...5))
        }
        // What the stream sends first is read now, in the request's task (so MongoDB being
        // unusable is this request's 503, and the connection's task never grows the stack of
        // those reads). Then the stream runs in the connection's own task, writing each frame as
        // it goes: no task or buffer of its own while idle. A client that stops reading blocks
        // its write; the hub's heartbeat pass then drops its connection (`StreamHub.stuckAfter`).
        // The body runs after the middleware returned, outside the request's Redis scope (after
        // one failed call, that scope would make every later cache call of the stream skip Redis).
        let session = try await stream.prepare(resumeAfter: lastEventID)
        return Response(
            status: .ok, headers: headers,
            body: ResponseBody { writer in
                defer { stream.close() }
                do {
                    try await stream.run(session) { frame in try await writer.write(ByteBuffer(string: frame)) }
                } catch {
                    // The stream's own failure (MongoDB unusable for a count or a reset): tell the
                    // client when to come back, spread, so a failing instance's clients do not
                    // return at once. (A client that left fails this write too: nobody to tell.)
                    try? await writer.write(ByteBuffer(string: hub.retryLine()))
                }
                try? await writer.finish(nil)
            })
    }

    static func tooManyStreams() -> Problem {
        Problem.overloaded("This instance holds as many streams as it may; retry, possibly elsewhere.")
    }
}

extension HTTPField.Name {
    static let lastEventID = HTTPField.Name("Last-Event-ID")!
    static let xAccelBuffering = HTTPField.Name("X-Accel-Buffering")!
}
