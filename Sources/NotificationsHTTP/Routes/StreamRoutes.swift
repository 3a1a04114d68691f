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

    func register(on routes: RouteRegistrar<some RouterMethods<AppRequestContext>>) {
        routes.on(.get, "/users/{userId}/notifications/stream", stream)
    }

    @Sendable func stream(_ request: Request, context: AppRequestContext) async throws -> Response {
        let user = try NotificationRoutes.userID(context)
        // An empty Last-Event-ID is no resume; anything else must be a notification id.
        let lastEventID = try request.headers[.lastEventID].map { $0.trimmingCharacters(in: .whitespaces) }.flatMap { text in
            text.isEmpty ? nil : try Validation.notificationID(text, field: "Last-Event-ID")
        }
        guard let stream = NotificationStream.open(user: user, store: store, feed: feed, hub: hub, heartbeat: heartbeat, pollInterval: pollInterval) else {
            throw Problem(.serviceUnavailable, code: "overloaded", title: "Too many streams",
                          detail: "This instance holds as many streams as it may; retry, possibly elsewhere.", headers: [.retryAfter: "1"])
        }
        let headers: HTTPFields = [.contentType: "text/event-stream", .cacheControl: "no-cache", .xAccelBuffering: "no"]
        return Response(status: .ok, headers: headers, body: ResponseBody { writer in
            defer { stream.close() }
            do {
                try await stream.run(resumeAfter: lastEventID) { frame in
                    try await writer.write(ByteBuffer(string: frame))
                }
            } catch {
                // The client left (a write failed) or the store failed: the stream just ends.
            }
            try await writer.finish(nil)
        })
    }
}

extension HTTPField.Name {
    static let lastEventID = HTTPField.Name("Last-Event-ID")!
    static let xAccelBuffering = HTTPField.Name("X-Accel-Buffering")!
}
