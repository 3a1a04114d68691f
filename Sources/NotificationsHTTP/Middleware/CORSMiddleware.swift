internal import HTTPTypes
public import Hummingbird

/// CORS for browsers calling `/v1` from `CORS_ALLOWED_ORIGINS` (exact origins; none: this
/// middleware does nothing). A response to an allowed `Origin` names that origin (never `*`,
/// never credentials), `Vary: Origin`, and the headers a client reads; a preflight from it is
/// answered here, before authentication, rate limiting and shedding; a preflight from any
/// other origin is 403. It sits outside the problem middleware, so errors, 429s and 503s
/// carry the headers too.
public struct CORSMiddleware: RouterMiddleware {
    public typealias Context = AppRequestContext
    let origins: Set<String>

    static let allowMethods = "GET, HEAD, POST, PUT, DELETE"
    static let allowHeaders = "Authorization, Content-Type, Idempotency-Key, Last-Event-ID, X-Request-Id"
    static let exposeHeaders =
        "RateLimit-Policy, RateLimit, X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset, X-RateLimit-Status, Retry-After, X-Request-Id, X-Cache, Location"
    /// How long a browser may reuse a preflight's answer.
    static let maxAgeSeconds = 600

    public init(origins: [String]) {
        self.origins = Set(origins)
    }

    public func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard !origins.isEmpty else { return try await next(request, context) }
        let origin = request.headers[.origin]
        let allowed = origin.map(origins.contains) ?? false
        if request.method == .options, request.headers[.accessControlRequestMethod] != nil {
            guard let origin, allowed else {
                return Problem.forbidden("This origin may not call the API from a browser.").response()
            }
            var headers = Self.headers(for: origin)
            headers[.accessControlAllowMethods] = Self.allowMethods
            headers[.accessControlAllowHeaders] = Self.allowHeaders
            headers[.accessControlMaxAge] = String(Self.maxAgeSeconds)
            return Response(status: .noContent, headers: headers)
        }
        var response = try await next(request, context)
        if let origin, allowed {
            for field in Self.headers(for: origin) { response.headers[field.name] = field.value }
        }
        return response
    }

    static func headers(for origin: String) -> HTTPFields {
        [.accessControlAllowOrigin: origin, .vary: "Origin", .accessControlExposeHeaders: exposeHeaders]
    }
}

extension HTTPField.Name {
    static let accessControlRequestMethod = HTTPField.Name("Access-Control-Request-Method")!
    static let accessControlAllowMethods = HTTPField.Name("Access-Control-Allow-Methods")!
    static let accessControlAllowHeaders = HTTPField.Name("Access-Control-Allow-Headers")!
    static let accessControlMaxAge = HTTPField.Name("Access-Control-Max-Age")!
    static let accessControlAllowOrigin = HTTPField.Name("Access-Control-Allow-Origin")!
    static let accessControlExposeHeaders = HTTPField.Name("Access-Control-Expose-Headers")!
}
