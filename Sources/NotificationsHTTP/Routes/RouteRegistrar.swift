internal import HTTPTypes
internal import Hummingbird

/// Registers a route on a router or group and records it in the `RouteTable` (for 405s).
struct RouteRegistrar<Methods: RouterMethods<AppRequestContext>> {
    let methods: Methods
    let table: RouteTable
    /// The group's prefix, e.g. "/v1", so the table holds full templates.
    let prefix: String

    /// - Parameters:
    ///   - access: who may call it (`AccessMiddleware`); API keys only unless a user scope is named.
    ///   - probe: for a GET whose handler reads through `FeedCache`, the lookup it will make, so
    ///     the rate-limit check can do it in the same Redis round trip.
    func on(
        _ method: HTTPRequest.Method, _ path: String, access: RouteAccess = .apiKey,
        _ handler: @escaping @Sendable (Request, AppRequestContext) async throws -> Response,
        probe: CacheProbeBuilder? = nil
    ) {
        table.add(method, prefix + path, access: access, probe: probe)
        methods.on(RouterPath(path), method: method, use: handler)
    }
}
