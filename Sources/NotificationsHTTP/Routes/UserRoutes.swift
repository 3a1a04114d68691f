internal import Foundation
internal import HTTPTypes
internal import Hummingbird
internal import NIOCore
internal import NotificationsCore

/// `/v1/users/{userId}/followers...` and `/v1/users/{userId}/preferences`.
struct UserRoutes {
    let followers: FollowerStore
    let preferences: PreferenceService
    let cache: FeedCache
    let clock: any WallClock

    func register(on routes: RouteRegistrar<some RouterMethods<AppRequestContext>>) {
        routes.on(.get, "/users/{userId}/followers", listFollowers) { [cache] request, context in
            guard let (user, limit, after) = try? Self.followersQuery(request, context: context) else { return nil }
            return cache.probe(user: user, variant: Self.followersVariant(limit: limit, after: after))
        }
        routes.on(.put, "/users/{userId}/followers/{followerId}", follow)
        routes.on(.delete, "/users/{userId}/followers/{followerId}", unfollow)
        routes.on(.get, "/users/{userId}/preferences", access: .user(.feedRead), getPreferences) { [preferences] _, context in
            (try? NotificationRoutes.userID(context)).flatMap { preferences.probe(user: $0) }
        }
        routes.on(.put, "/users/{userId}/preferences", access: .user(.preferencesWrite), putPreferences)
    }

    @Sendable func follow(_ request: Request, context: AppRequestContext) async throws -> Response {
        let (user, follower) = try Self.edge(context)
        guard user != follower else { throw Problem.validation(ValidationError(field: "followerId", "a user cannot follow themselves")) }
        try await followers.follow(user: user, follower: follower, at: clock.now())
        await cache.invalidate(user: user)
        return Response(status: .noContent)
    }

    @Sendable func unfollow(_ request: Request, context: AppRequestContext) async throws -> Response {
        let (user, follower) = try Self.edge(context)
        try await followers.unfollow(user: user, follower: follower)
        await cache.invalidate(user: user)
        return Response(status: .noContent)
    }

    /// `{"items": [...], "nextCursor"}`: follower ids in id order, paged by the last id served.
    @Sendable func listFollowers(_ request: Request, context: AppRequestContext) async throws -> Response {
        let (user, limit, after) = try Self.followersQuery(request, context: context)
        let cached = try await cache.cached(user: user, variant: Self.followersVariant(limit: limit, after: after)) { [followers] in
            let page = try await followers.page(user: user, after: after, limit: limit + 1)
            let items = Array(page.prefix(limit))
            let next = page.count > limit ? items.last.map { FollowerCursor(lastFollowerID: $0).encoded } : nil
            var json = JSONWriter()
            json.object { object in
                object.array("items", items) { json, id in json.string(id) }
                object.string("nextCursor", next)
            }
            return json.bytes
        }
        return .cachedJSON(cached)
    }

    /// The user, page size and cursor of a followers request, validated.
    static func followersQuery(_ request: Request, context: AppRequestContext) throws -> (user: String, limit: Int, after: String?) {
        let user = try NotificationRoutes.userID(context)
        let query = request.uri.queryParameters
        let limit = try QueryParameters.integer(query.get("limit"), name: "limit", default: 20, in: 1...100)
        let after = try query.get("cursor").flatMap { $0.isEmpty ? nil : $0 }.map { (text: String) throws(ValidationError) in
            try FollowerCursor(encoded: text).lastFollowerID
        }
        return (user, limit, after)
    }

    static func followersVariant(limit: Int, after: String?) -> String {
        "followers:\(limit):\(after ?? "")"
    }

    @Sendable func getPreferences(_ request: Request, context: AppRequestContext) async throws -> Response {
        .cachedJSON(try await preferences.get(user: try NotificationRoutes.userID(context)))
    }

    @Sendable func putPreferences(_ request: Request, context: AppRequestContext) async throws -> Response {
        let user = try NotificationRoutes.userID(context)
        let value = try Preferences(json: try await RequestBody.json(request, context: context))
        let stored = try await preferences.put(user: user, value)
        return .json { stored.write(to: &$0) }
    }

    static func edge(_ context: AppRequestContext) throws -> (String, String) {
        let user = try NotificationRoutes.userID(context)
        let follower = try Validation.userID(context.parameters.get("followerId")?.percentDecoded ?? "", field: "followerId")
        return (user, follower)
    }
}
