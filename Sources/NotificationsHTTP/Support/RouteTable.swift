public import HTTPTypes
internal import Hummingbird
internal import NotificationsCore

/// The cache lookup a GET route's handler will make, computed from the request before the
/// handler runs (nil when the request will not make one, e.g. it fails validation). It may
/// leave what it parsed in the context for the handler (`AppRequestContext.pageQuery`).
typealias CacheProbeBuilder = @Sendable (Request, inout AppRequestContext) -> CacheProbe?

/// The routes this service serves, as `(method, template)`, recorded as they are registered.
///
/// Hummingbird answers a known path with an unknown method as "not found"; this table lets
/// the error middleware answer 405 with the right `Allow` header instead.
public final class RouteTable: @unchecked Sendable {
    // Written only while the router is built (before the server starts), read-only afterwards.
    private var routes: [(method: HTTPRequest.Method, components: [Substring])] = []
    /// By full template (`context.endpointPath`): see `RateLimitMiddleware`.
    private var probes: [String: CacheProbeBuilder] = [:]
    /// By full template, then method: see `AccessMiddleware` (no string is built per request).
    private var accesses: [String: [HTTPRequest.Method: RouteAccess]] = [:]

    public init() {}

    /// A GET route answers HEAD too (the router generates it), so `Allow` lists both.
    func add(_ method: HTTPRequest.Method, _ template: String, access: RouteAccess = .apiKey, probe: CacheProbeBuilder? = nil) {
        routes.append((method, template.split(separator: "/")))
        accesses[template, default: [:]][method] = access
        if method == .get {
            routes.append((.head, template.split(separator: "/")))
            accesses[template, default: [:]][.head] = access
        }
        if let probe { probes[template] = probe }
    }

    /// Who may call this route (API keys only when the route is unknown: nothing more is granted by mistake).
    func access(_ method: HTTPRequest.Method, template: String?) -> RouteAccess {
        guard let template else { return .apiKey }
        return accesses[template]?[method] ?? .apiKey
    }

    /// The cache lookup the handler of this request's route will make, if it makes one.
    func probe(_ request: Request, context: inout AppRequestContext) -> CacheProbe? {
        guard request.method == .get || request.method == .head, let template = context.endpointPath else { return nil }
        return probes[template]?(request, &context)
    }

    /// Methods served at a concrete path (empty when no template matches it). Like the router,
    /// a literal segment wins over a parameter: `/read-all` is not a notification `{id}`.
    public func methods(for path: String) -> [HTTPRequest.Method] {
        let components = path.split(separator: "/")
        let matching = routes.filter { Self.matches($0.components, components) }
        let mostLiteral = matching.map { Self.literalCount($0.components) }.max()
        var methods: [HTTPRequest.Method] = []
        for route in matching where Self.literalCount(route.components) == mostLiteral && !methods.contains(route.method) {
            methods.append(route.method)
        }
        return methods
    }

    private static func literalCount(_ template: [Substring]) -> Int {
        template.filter { !$0.hasPrefix("{") }.count
    }

    private static func matches(_ template: [Substring], _ path: [Substring]) -> Bool {
        template.count == path.count && zip(template, path).allSatisfy { $0.hasPrefix("{") || $0 == $1 }
    }
}
