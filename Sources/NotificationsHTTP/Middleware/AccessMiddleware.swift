public import Hummingbird
internal import NotificationsCore

/// What a user token may do, decided in one place from the route table (`RouteAccess`): the
/// route must name a scope the token holds, and its `{userId}` must be the token's user.
/// Anything else is 403 `forbidden`. Runs after the rate limit, so a refused request still
/// counts against its user's limit. API keys pass: they may call every `/v1` route.
public struct AccessMiddleware: RouterMiddleware {
    public typealias Context = AppRequestContext
    let routes: RouteTable

    public init(routes: RouteTable) {
        self.routes = routes
    }

    public func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard let token = context.userToken else { return try await next(request, context) }
        guard let scope = routes.access(request.method, template: context.endpointPath).scope else {
            throw Problem.forbidden("This route takes an API key; a user token cannot call it.")
        }
        guard context.parameters.get("userId") == token.userId else {
            throw Problem.forbidden("A user token opens its own user's routes only.")
        }
        guard token.scopes.contains(scope) else {
            throw Problem.forbidden("The token lacks the scope \(scope.rawValue).")
        }
        return try await next(request, context)
    }
}
