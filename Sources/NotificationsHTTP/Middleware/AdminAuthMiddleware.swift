public import Hummingbird
internal import NIOCore

/// `/admin/*`: `Authorization: Bearer <ADMIN_TOKEN>`; with no token configured, loopback only
/// (so `curl -X POST localhost:8080/admin/circuit-breaker/redis/reset` works on the box).
public struct AdminAuthMiddleware: RouterMiddleware {
    public typealias Context = AppRequestContext
    let token: String?

    public init(token: String?) {
        self.token = token
    }

    public func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        if let token {
            guard let presented = BearerToken.parse(request.headers[.authorization]), ConstantTime.equal(presented, token) else {
                throw Problem.unauthorized()
            }
        } else if !Self.isLoopback(context.remoteAddress) {
            throw Problem.forbidden("Admin endpoints answer only loopback clients while ADMIN_TOKEN is unset.")
        }
        return try await next(request, context)
    }

    static func isLoopback(_ address: SocketAddress?) -> Bool {
        guard let ip = address?.ipAddress else { return false }
        return ip.hasPrefix("127.") || ip == "::1" || ip.hasPrefix("::ffff:127.")
    }
}
