internal import HTTPTypes
public import Hummingbird
public import NotificationsCore

/// Rate limiting on `/v1` (after auth: the key's name picks the policy; every user token's is
/// `user`, one bucket per user). Every response it
/// lets through or produces carries the rate-limit headers, errors included; a fail-closed
/// 503 carries `Retry-After` only. A cached read's cache lookup goes out with the check (one
/// Redis round trip per request, see `CacheReadAhead`).
public struct RateLimitMiddleware: RouterMiddleware {
    public typealias Context = AppRequestContext
    let limiter: RateLimiter
    let metrics: ServiceMetrics
    /// The routes' cache probes: a cached read's lookup rides on the rate-limit check.
    let routes: RouteTable

    public init(limiter: RateLimiter, metrics: ServiceMetrics, routes: RouteTable) {
        self.limiter = limiter
        self.metrics = metrics
        self.routes = routes
    }

    public func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let group: RouteGroup = request.method == .get || request.method == .head ? .read : .write
        var context = context
        let probe = routes.probe(request, context: &context)
        // An API key's policy is its own; a user token's is `user`, with one bucket per user.
        let (decision, readAhead): (RateLimitDecision, CacheReadAhead?)
        if let key = context.apiKey {
            (decision, readAhead) = await limiter.check(keyName: key.name, group: group, readingAhead: probe)
        } else if let token = context.userToken {
            (decision, readAhead) = await limiter.check(user: token.userId, group: group, readingAhead: probe)
        } else {
            throw Problem.unauthorized()
        }
        var response: Response
        switch decision.outcome {
        case .unavailable(let retryAfter):
            return Problem(.serviceUnavailable, code: "rate_limiter_unavailable", title: "Rate limiter unavailable",
                           detail: "Rate limits cannot be checked right now; retry later.", headers: [.retryAfter: String(retryAfter)]).response()
        case .limited(let retryAfter):
            response = Problem(.tooManyRequests, code: "rate_limited", title: "Too many requests",
                               detail: "The rate limit of policy \(decision.policyName) is exhausted.", headers: [.retryAfter: String(retryAfter)]).response()
        case .allowed, .unlimited:
            do {
                response = try await CacheReadAhead.serving(readAhead) { try await next(request, context) }
            } catch {
                response = ProblemMiddleware.problem(for: error, logger: context.logger, metrics: metrics).response()
            }
        }
        Self.addHeaders(decision, to: &response.headers)
        return response
    }

    /// draft-ietf-httpapi-ratelimit-headers (-08 and later) plus the X- headers.
    static func addHeaders(_ decision: RateLimitDecision, to headers: inout HTTPFields) {
        if decision.outcome == .unlimited {
            headers[.xRateLimitStatus] = "unlimited"
            return
        }
        let name = structuredString(decision.policyName)
        headers[.rateLimitPolicy] = "\(name);q=\(decision.limit);w=\(decision.windowSeconds)"
        headers[.rateLimit] = "\(name);r=\(decision.remaining);t=\(decision.resetSeconds)"
        headers[.xRateLimitLimit] = String(decision.limit)
        headers[.xRateLimitRemaining] = String(decision.remaining)
        headers[.xRateLimitReset] = String(decision.resetSeconds)
        headers[.xRateLimitStatus] = decision.status.rawValue
    }

    /// An RFC 8941 sf-string: quoted, with `\` and `"` escaped.
    static func structuredString(_ text: String) -> String {
        var out = "\""
        for char in text.unicodeScalars where char.value >= 0x20 && char.value < 0x7F {
            if char == "\\" || char == "\"" { out.append("\\") }
            out.unicodeScalars.append(char)
        }
        return out + "\""
    }
}

extension HTTPField.Name {
    static let rateLimitPolicy = HTTPField.Name("RateLimit-Policy")!
    static let rateLimit = HTTPField.Name("RateLimit")!
    static let xRateLimitLimit = HTTPField.Name("X-RateLimit-Limit")!
    static let xRateLimitRemaining = HTTPField.Name("X-RateLimit-Remaining")!
    static let xRateLimitReset = HTTPField.Name("X-RateLimit-Reset")!
    static let xRateLimitStatus = HTTPField.Name("X-RateLimit-Status")!
}
