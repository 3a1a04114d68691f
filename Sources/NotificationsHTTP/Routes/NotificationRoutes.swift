internal import HTTPTypes
internal import Foundation
internal import NIOCore
internal import Hummingbird
internal import NotificationsCore

/// `/v1/notifications` and `/v1/users/{userId}/notifications...`: decode, validate, call
/// `NotificationFeed`, encode. No rules live here.
struct NotificationRoutes {
    let feed: NotificationFeed
    let bulk: AllAtOnceOperations

    func register(on routes: RouteRegistrar<some RouterMethods<AppRequestContext>>) {
        routes.on(.post, "/notifications", create)
        routes.on(.get, "/users/{userId}/notifications", access: .user(.feedRead), list) { [feed] request, context in
            guard let query = try? Self.pageQuery(request, context: context) else { return nil }
            context.pageQuery = query
            return feed.pageProbe(userId: query.userId, limit: query.limit, cursor: query.cursor, filter: query.filter)
        }
        routes.on(.get, "/users/{userId}/notifications/unread-count", access: .user(.feedRead), unreadCount) { [feed] _, context in
            (try? Self.userID(context)).flatMap { feed.unreadCountProbe(userId: $0) }
        }
        routes.on(.get, "/users/{userId}/notifications/counts", access: .user(.feedRead), counts) { [feed] _, context in
            (try? Self.userID(context)).flatMap { feed.countsProbe(userId: $0) }
        }
        for action in [StateAction.seen, .read, .archive] {
            routes.on(.post, "/users/{userId}/notifications/\(action.rawValue)-all", access: .user(.feedWrite)) { request, context in
                try await applyAll(action, request, context: context)
            }
        }
        routes.on(.get, "/users/{userId}/notifications/operations/{operationId}", access: .user(.feedRead), operation)
        routes.on(.post, "/users/{userId}/notifications/batch", access: .user(.feedWrite), batch)
        for action in StateAction.allCases {
            routes.on(.post, "/users/{userId}/notifications/{id}/\(action.rawValue)", access: .user(.feedWrite)) { request, context in
                try await setState(action, request, context: context)
            }
        }
        routes.on(.delete, "/users/{userId}/notifications/{id}", access: .user(.feedWrite), delete)
    }

    @Sendable func create(_ request: Request, context: AppRequestContext) async throws -> Response {
        let input = try NewNotification(json: try await RequestBody.json(request, context: context))
        let notification: NotificationsCore.Notification
        switch try await feed.deliver(input, plannedID: context.idempotencyClaim?.plannedID) {
        case .created(let created):
            notification = created
        case .suppressed(let reason):
            return .json(.accepted) { $0.object { $0.string("status", "suppressed"); $0.string("reason", reason.rawValue) } }
        }
        let location = "/v1/users/\(notification.recipientId)/notifications/\(notification.id)"
        return .json(.created, headers: [.location: location]) { notification.write(to: &$0) }
    }

    @Sendable func list(_ request: Request, context: AppRequestContext) async throws -> Response {
        let query = try context.pageQuery ?? Self.pageQuery(request, context: context)
        return .cachedJSON(try await feed.page(userId: query.userId, limit: query.limit, cursor: query.cursor, filter: query.filter))
    }

    /// The user and query of a feed page request, validated.
    static func pageQuery(_ request: Request, context: AppRequestContext) throws -> PageQuery {
        let userId = try userID(context)
        let query = request.uri.queryParameters
        let limit = try QueryParameters.integer(query.get("limit"), name: "limit", default: 20, in: 1...100)
        // An empty cursor is the first page (clients often send back a null nextCursor that way).
        let cursor = try query.get("cursor").flatMap { $0.isEmpty ? nil : $0 }.map { (text: String) throws(ValidationError) in
            try FeedCursor(encoded: text)
        }
        return PageQuery(userId: userId, limit: limit, cursor: cursor, filter: try feedFilter { query.get($0) })
    }

    /// `status`, `archived`, `type`, and the older `unreadOnly=true` (= `status=unread`).
    static func feedFilter(_ parameter: (String) -> String?) throws(ValidationError) -> FeedFilter {
        var status = try QueryParameters.choice(parameter("status"), name: "status", default: FeedFilter.Status.all)
        if try QueryParameters.bool(parameter("unreadOnly"), name: "unreadOnly", default: false) {
            // Asked for twice, differently: refused rather than one of them silently ignored.
            guard parameter("status") == nil || status == .unread else {
                throw ValidationError(field: "unreadOnly", "unreadOnly=true is status=unread; it cannot be combined with status=\(status.rawValue)")
            }
            status = .unread
        }
        let archived = try QueryParameters.choice(parameter("archived"), name: "archived", default: FeedFilter.Archived.exclude)
        let type = try parameter("type").map { (text: String) throws(ValidationError) in try Validation.notificationType(text) }
        return FeedFilter(status: status, archived: archived, type: type)
    }

    @Sendable func unreadCount(_ request: Request, context: AppRequestContext) async throws -> Response {
        .cachedJSON(try await feed.unreadCount(userId: try Self.userID(context)))
    }

    @Sendable func counts(_ request: Request, context: AppRequestContext) async throws -> Response {
        .cachedJSON(try await feed.counts(userId: try Self.userID(context)))
    }

    @Sendable func setState(_ action: StateAction, _ request: Request, context: AppRequestContext) async throws -> Response {
        let userId = try Self.userID(context)
        let id = try Self.notificationID(context)
        guard let notification = try await feed.setState(action, userId: userId, id: id) else {
            throw Problem.notFound("User \(userId) has no notification \(id).")
        }
        return .json { notification.write(to: &$0) }
    }

    /// `seen-all`, `read-all`, `archive-all`, with an optional `{type, before}` body.
    @Sendable func applyAll(_ action: StateAction, _ request: Request, context: AppRequestContext) async throws -> Response {
        let userId = try Self.userID(context)
        var request = request
        let body = try await RequestBody.collect(&request)
        let filter = body.readableBytes == 0 ? AllAtOnceFilter() : try AllAtOnceFilter(json: try await RequestBody.json(request, context: context))
        switch try await bulk.apply(action, userId: userId, type: filter.type, before: filter.before) {
        case .done(let updated):
            return .json { $0.object { $0.integer("updated", updated) } }
        case .inProgress(let operationId, let updated):
            return .json(.accepted, headers: [.location: "/v1/users/\(userId)/notifications/operations/\(operationId)"]) {
                $0.object {
                    $0.string("operationId", operationId)
                    $0.string("status", "in_progress")
                    $0.integer("updated", updated)
                }
            }
        }
    }

    /// `GET …/operations/{operationId}`: an all-at-once operation gone to the background.
    @Sendable func operation(_ request: Request, context: AppRequestContext) async throws -> Response {
        let userId = try Self.userID(context)
        let operationId = try Validation.notificationID(context.parameters.get("operationId") ?? "", field: "operationId")
        guard let operation = try await bulk.status(userId: userId, operationId: operationId) else {
            throw Problem.notFound("User \(userId) has no operation \(operationId).")
        }
        return .json { operation.write(to: &$0) }
    }

    @Sendable func batch(_ request: Request, context: AppRequestContext) async throws -> Response {
        let userId = try Self.userID(context)
        let input = try BatchRequest(json: try await RequestBody.json(request, context: context))
        let updated = try await feed.batch(input.action, userId: userId, ids: input.ids)
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

    /// Path ids arrive raw: a client may percent-encode `:` or `@` (`user%3A1%40x`).
    static func userID(_ context: AppRequestContext) throws -> String {
        try Validation.userID(context.parameters.get("userId")?.percentDecoded ?? "", field: "userId")
    }

    static func notificationID(_ context: AppRequestContext) throws -> String {
        try Validation.notificationID(context.parameters.get("id") ?? "", field: "id")
    }
}

/// `GET /v1/users/{userId}/notifications`, validated.
struct PageQuery: Sendable {
    var userId: String
    var limit: Int
    var cursor: FeedCursor?
    var filter: FeedFilter
}

extension HTTPField.Name {
    static let xCache = HTTPField.Name("X-Cache")!
    static let xCacheTier = HTTPField.Name("X-Cache-Tier")!
}

extension Response {
    /// A body from the feed cache (or loaded for it), with `X-Cache`.
    static func cachedJSON(_ cached: CachedJSON) -> Response {
        var headers: HTTPFields = [.contentType: "application/json", .xCache: cached.cache.rawValue]
        if let tier = cached.tier { headers[.xCacheTier] = tier.rawValue }
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: cached.body)))
    }
}
