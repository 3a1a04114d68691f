public import Hummingbird
internal import HTTPTypes
internal import NIOCore

/// `/admin/*`: `Authorization: Bearer <ADMIN_TOKEN>`; with no token configured, loopback only
/// (so `curl -X POST localhost:8080/admin/circuit-breaker/redis/reset` works on the box).
/// A request that carries a forwarding header came through a proxy, which on the same host
/// would look like loopback: it is refused, so a local reverse proxy cannot make admin public.
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
        } else if !Self.isDirectLoopback(request, context) {
            throw Problem.forbidden("Admin endpoints answer only direct loopback clients while ADMIN_TOKEN is unset.")
        }
        return try await next(request, context)
    }

    /// From this host, and not through a proxy (which on the same host would look like loopback).
    static func isDirectLoopback(_ request: Request, _ context: Context) -> Bool {
        isLoopback(context.remoteAddress) && !isForwarded(request.headers)
    }

    /// The headers a proxy adds (RFC 7239's `Forwarded` and the two de-facto ones).
    static let forwardingHeaders: [HTTPField.Name] = [
        HTTPField.Name("Forwarded")!, HTTPField.Name("X-Forwarded-For")!, HTTPField.Name("X-Real-IP")!,
    ]

    static func isForwarded(_ headers: HTTPFields) -> Bool {
        forwardingHeaders.contains { headers[$0] != nil }
    }

    static func isLoopback(_ address: SocketAddress?) -> Bool {
        guard let ip = address?.ipAddress else { return false }
        return ip.hasPrefix("127.") || ip == "::1" || ip.hasPrefix("::ffff:127.")
    }
}
