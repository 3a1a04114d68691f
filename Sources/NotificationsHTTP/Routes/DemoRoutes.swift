internal import HTTPTypes
internal import Hummingbird
internal import NIOCore
internal import NotificationsCore

/// `DEMO_UI=true`: an inbox page at `/demo/` built only on the browser client (`clients/js/`),
/// and `/demo/token?userId=` standing in for a product's backend, which would mint the user
/// token itself. Loopback clients only (and never through a proxy): the token route hands out
/// tokens for any user, so it must never be reachable from elsewhere.
struct DemoRoutes {
    let tokens: UserTokens
    let clock: any WallClock

    func register(on routes: RouteRegistrar<some RouterMethods<AppRequestContext>>) {
        // Answers `/demo` too (the router ignores a trailing slash): that one is redirected.
        routes.on(.get, "/demo/", page)
        routes.on(.get, "/demo/notifications.js", module)
        routes.on(.get, "/demo/token", token)
    }

    private func loopbackOnly(_ request: Request, _ context: AppRequestContext) throws {
        guard AdminAuthMiddleware.isDirectLoopback(request, context) else {
            throw Problem.forbidden("The demo answers only direct loopback clients.")
        }
    }

    @Sendable func page(_ request: Request, context: AppRequestContext) async throws -> Response {
        try loopbackOnly(request, context)
        // The module is imported relative to the page: /demo without its slash would miss it.
        guard request.uri.path.hasSuffix("/") else {
            let query = request.uri.query.map { "?\($0)" } ?? ""
            return Response(status: .movedPermanently, headers: [.location: "/demo/\(query)"])
        }
        return Self.asset(DemoAssets.page, type: "text/html; charset=utf-8")
    }

    @Sendable func module(_ request: Request, context: AppRequestContext) async throws -> Response {
        try loopbackOnly(request, context)
        return Self.asset(DemoAssets.module, type: "text/javascript; charset=utf-8")
    }

    @Sendable func token(_ request: Request, context: AppRequestContext) async throws -> Response {
        try loopbackOnly(request, context)
        guard tokens.enabled else { throw Problem.notFound("The demo needs USER_TOKEN_KEYS to mint its user tokens.") }
        let userId = try Validation.userID(request.uri.queryParameters.get("userId") ?? "", field: "userId")
        let scopes = Set(UserScope.allCases)
        let (token, expiresAt) = try await tokens.mint(userId: userId, scopes: scopes, ttlSeconds: TokenRequest.defaultTTLSeconds, now: clock.now())
        return TokenRoutes.minted(token, expiresAt: expiresAt, scopes: scopes, status: .ok)
    }

    static func asset(_ text: String, type: String) -> Response {
        Response(status: .ok, headers: [.contentType: type, .cacheControl: "no-cache"], body: .init(byteBuffer: ByteBuffer(string: text)))
    }
}
