internal import Hummingbird
internal import Prometheus
internal import NIOCore

/// `GET /metrics`: the Prometheus text exposition of this instance's registry.
struct MetricsRoute {
    let registry: PrometheusCollectorRegistry

    func register(on routes: RouteRegistrar<some RouterMethods<AppRequestContext>>) {
        routes.on(.get, "/metrics", metrics)
    }

    @Sendable func metrics(_ request: Request, context: AppRequestContext) async throws -> Response {
        Response(
            status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
            body: .init(byteBuffer: ByteBuffer(bytes: registry.emitToBuffer())))
    }
}
