internal import Foundation
internal import HTTPTypes
internal import Hummingbird
internal import NIOCore
internal import NotificationsCore

/// `GET /v1/users/{userId}/notifications/stream`: Server-Sent Events (`NotificationStream`).
struct StreamRoutes {
    let queries: StreamQueries
    let hub: StreamHub
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
                user: user, credentialSecond: context.userToken?.issuedAt, queries: queries, hub: hub, onStuck: { channel.close(promise: nil) })
        } catch .full {
            metrics.requestShed(.streams)
            throw Self.tooManyStreams()
        } catch .tooFast {
            metrics.requestShed(.streamAccept)
            // Spread, so the refused part of a storm does not come back in one second.
            throw Problem.overloaded(
                "This instance is accepting new streams as fast as it may; retry after the delay given.", retryAfterSeconds: Int.random(in: 1...5))
        }
        // The stream runs in the connection's own task, writing each frame as it goes: no task
        // or buffer of its own while idle. What it sends first is read on a stack of its own
        // (`NotificationStream.prepare`), so that task never grows the stack of those reads,
        // and after the handler returned, so the request's middleware stack is freed and its
        // MAX_IN_FLIGHT slot released meanwhile. A client that stops reading blocks its write;
        // the hub's heartbeat pass then drops its connection (`StreamHub.stuckAfter`). The body
        // runs outside the request's Redis scope (after one failed call, that scope would make
        // every later cache call of the stream skip Redis).
        return Response(
            status: .ok, headers: headers,
            body: ResponseBody { [stream] writer in
                defer { stream.close() }
                do {
                    let session = try await stream.prepare(resumeAfter: lastEventID)
                    try await session.run { frame in try await writer.write(ByteBuffer(string: frame)) }
                } catch {
                    // The stream's own failure (MongoDB unusable when it opened, or for a count):
                    // tell the client when to come back, spread, so a failing instance's clients
                    // do not return at once. (A client that left fails this write too.)
                    try? await writer.write(ByteBuffer(string: stream.retryLine()))
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
