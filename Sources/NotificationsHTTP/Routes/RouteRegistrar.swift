internal import HTTPTypes
internal import Hummingbird

/// Registers a route on a router or group and records it in the `RouteTable` (for 405s).
struct RouteRegistrar<Methods: RouterMethods<AppRequestContext>> {
    let methods: Methods
    let table: RouteTable
    /// The group's prefix, e.g. "/v1", so the table holds full templates.
    let prefix: String

    func on(
        _ method: HTTPRequest.Method, _ path: String,
        _ handler: @escaping @Sendable (Request, AppRequestContext) async throws -> Response
    ) {
        table.add(method, prefix + path)
        methods.on(RouterPath(path), method: method, use: handler)
    }
}
