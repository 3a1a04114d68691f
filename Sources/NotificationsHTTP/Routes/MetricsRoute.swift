internal import Hummingbird
internal import Prometheus
internal import NIOCore
internal import NotificationsCore

/// `GET /metrics`: the Prometheus text exposition of this instance's registry, with help texts.
struct MetricsRoute {
    let registry: PrometheusCollectorRegistry

    func register(on routes: RouteRegistrar<some RouterMethods<AppRequestContext>>) {
        routes.on(.get, "/metrics", metrics)
    }

    @Sendable func metrics(_ request: Request, context: AppRequestContext) async throws -> Response {
        Response(
            status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
            body: .init(byteBuffer: ByteBuffer(bytes: MetricHelp.annotate(registry.emitToBuffer()))))
    }
}
