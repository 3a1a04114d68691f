internal import HTTPTypes
internal import Hummingbird
internal import NotificationsCore

/// `POST /v1/users/{userId}/tokens` (mint a user token) and `…/tokens/revoke` (refuse every
/// token of the user issued up to now). API keys only; without `USER_TOKEN_KEYS`, 404.
struct TokenRoutes {
    let tokens: UserTokens
    let revocations: TokenRevocations
    let clock: any WallClock

    func register(on routes: RouteRegistrar<some RouterMethods<AppRequestContext>>) {
        routes.on(.post, "/users/{userId}/tokens", mint)
        routes.on(.post, "/users/{userId}/tokens/revoke", revoke)
    }

    @Sendable func mint(_ request: Request, context: AppRequestContext) async throws -> Response {
        guard tokens.enabled else { throw Self.disabled() }
        let userId = try NotificationRoutes.userID(context)
        var request = request
        let body = try await RequestBody.collect(&request)
        let input = body.readableBytes == 0 ? TokenRequest() : try TokenRequest(json: try await RequestBody.json(request, context: context))
        let (token, expiresAt) = try await tokens.mint(userId: userId, scopes: input.scopes, ttlSeconds: input.ttlSeconds, now: clock.now())
        return Self.minted(token, expiresAt: expiresAt, scopes: input.scopes, status: .created)
    }

    /// `{"token", "expiresAt", "scopes"}`, never cached (a token is a credential).
    static func minted(_ token: String, expiresAt: Int64, scopes: Set<UserScope>, status: HTTPResponse.Status) -> Response {
        .json(status, headers: [.cacheControl: "no-store"]) {
            $0.object { object in
                object.string("token", token)
                object.string("expiresAt", Timestamp(milliseconds: expiresAt * 1000).rfc3339)
                object.array("scopes", scopes.sorted()) { $0.string($1.rawValue) }
            }
        }
    }

    @Sendable func revoke(_ request: Request, context: AppRequestContext) async throws -> Response {
        guard tokens.enabled else { throw Self.disabled() }
        let userId = try NotificationRoutes.userID(context)
        try await revocations.revoke(user: userId, now: clock.now())
        return Response(status: .noContent)
    }

    static func disabled() -> Problem {
        Problem.notFound("User tokens are not enabled on this service (USER_TOKEN_KEYS is unset).")
    }
}
