internal import HTTPTypes
public import Hummingbird
public import NotificationsCore

/// `/v1/notifications` and `/v1/users/{userId}/notifications...`: decode, validate, call
/// `NotificationFeed`, encode. No rules live here.
struct NotificationRoutes {
    let feed: NotificationFeed

    func register(on routes: RouteRegistrar<some RouterMethods<AppRequestContext>>) {
        routes.on(.post, "/notifications", create)
        routes.on(.get, "/users/{userId}/notifications", list)
        routes.on(.get, "/users/{userId}/notifications/unread-count", unreadCount)
        routes.on(.post, "/users/{userId}/notifications/read-all", markAllRead)
        routes.on(.post, "/users/{userId}/notifications/{id}/read", markRead)
        routes.on(.delete, "/users/{userId}/notifications/{id}", delete)
    }

    @Sendable func create(_ request: Request, context: AppRequestContext) async throws -> Response {
        let input = try NewNotification(json: try await RequestBody.json(request, context: context))
        let notification = try await feed.create(input)
        let location = "/v1/users/\(notification.recipientId)/notifications/\(notification.id)"
        return .json(.created, headers: [.location: location]) { notification.write(to: &$0) }
    }

    @Sendable func list(_ request: Request, context: AppRequestContext) async throws -> Response {
        let userId = try Self.userID(context)
        let query = request.uri.queryParameters
        let limit = try QueryParameters.integer(query.get("limit"), name: "limit", default: 20, in: 1...100)
        let cursor = try query.get("cursor").map { (text: String) throws(ValidationError) in try FeedCursor(encoded: text) }
        let unreadOnly = try QueryParameters.bool(query.get("unreadOnly"), name: "unreadOnly", default: false)
        let page = try await feed.page(userId: userId, limit: limit, cursor: cursor, unreadOnly: unreadOnly)
        return .json(headers: [.xCache: page.cache.rawValue]) { json in
            json.object { object in
                object.array("items", page.items) { json, item in item.write(to: &json) }
                object.string("nextCursor", page.nextCursor?.encoded)
                object.integer("unreadCount", page.unreadCount)
            }
        }
    }

    @Sendable func unreadCount(_ request: Request, context: AppRequestContext) async throws -> Response {
        let count = try await feed.unreadCount(userId: try Self.userID(context))
        return .json { $0.object { $0.integer("unreadCount", count) } }
    }

    @Sendable func markRead(_ request: Request, context: AppRequestContext) async throws -> Response {
        let userId = try Self.userID(context)
        let id = try Self.notificationID(context)
        guard let notification = try await feed.markRead(userId: userId, id: id) else {
            throw Problem.notFound("User \(userId) has no notification \(id).")
        }
        return .json { notification.write(to: &$0) }
    }

    @Sendable func markAllRead(_ request: Request, context: AppRequestContext) async throws -> Response {
        let updated = try await feed.markAllRead(userId: try Self.userID(context))
        return .json { $0.object { $0.integer("updated", updated) } }
    }

    @Sendable func delete(_ request: Request, context: AppRequestContext) async throws -> Response {
        let userId = try Self.userID(context)
        let id = try Self.notificationID(context)
        guard try await feed.delete(userId: userId, id: id) else {
            throw Problem.notFound("User \(userId) has no notification \(id).")
        }
        return Response(status: .noContent)
    }

    static func userID(_ context: AppRequestContext) throws -> String {
        try Validation.userID(context.parameters.get("userId") ?? "", field: "userId")
    }

    static func notificationID(_ context: AppRequestContext) throws -> String {
        try Validation.notificationID(context.parameters.get("id") ?? "", field: "id")
    }
}

extension HTTPField.Name {
    static let xCache = HTTPField.Name("X-Cache")!
}
