public import Hummingbird
internal import NotificationsCore

/// Gives each request its own Redis scope: after one Redis call of a request fails, the
/// request's later Redis calls fall back at once, so a hung Redis costs a request at most one
/// `REDIS_OPERATION_TIMEOUT_MS` (rate limit, cache and lock would otherwise wait in turn).
public struct RedisScopeMiddleware: RouterMiddleware {
    public typealias Context = AppRequestContext

    public init() {}

    public func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        try await RedisGateway.withRequestScope { try await next(request, context) }
    }
}
