public import Hummingbird
public import NotificationsCore

/// `http_requests_total` and `http_request_duration_seconds`, labelled by the matched route
/// template (`/v1/users/{userId}/notifications`); every unmatched path is one label value,
/// so clients cannot grow the label set. Also `feed_cache_requests_total`, from `X-Cache`.
public struct MetricsMiddleware: RouterMiddleware {
    public typealias Context = AppRequestContext
    static let unmatched = "unmatched"
    let metrics: ServiceMetrics

    public init(metrics: ServiceMetrics) {
        self.metrics = metrics
    }

    public func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let start = ContinuousClock.now
        let response = try await next(request, context)
        var route = context.endpointPath ?? Self.unmatched
        if route == "NotFound" { route = Self.unmatched }
        // A known path with another method (405) is not that route either.
        if response.status == .methodNotAllowed { route = Self.unmatched }
        metrics.httpRequest(method: Self.method(request.method), route: route, status: Int(response.status.code), duration: start.duration(to: .now))
        // Every cacheable read says how it was served (`X-Cache`); counted here, once, for the hit ratio.
        if let result = response.headers[.xCache].flatMap(CacheStatus.init(rawValue:)) { metrics.feedCache(result) }
        return response
    }

    /// Methods outside the standard set share one label value.
    static func method(_ method: HTTPRequest.Method) -> String {
        switch method {
        case .get, .head, .post, .put, .patch, .delete, .options: method.rawValue
        default: "OTHER"
        }
    }
}
