public import Hummingbird
internal import Logging
public import NotificationsCore
public import Resilience

/// First on `/v1`, before authentication and rate limiting: at most `MAX_IN_FLIGHT` requests
/// run at once; the next one gets 503 `overloaded` with `Retry-After: 1` at once, so a slow
/// dependency makes clients back off instead of queueing requests (and memory) without limit.
///
/// A slot is held until the handler has produced its response: a stream's body is written
/// afterwards, so open streams do not count (they have their own `STREAM_MAX_CONNECTIONS`).
public struct LoadSheddingMiddleware: RouterMiddleware {
    public typealias Context = AppRequestContext
    let slots: Bulkhead
    let metrics: ServiceMetrics

    public init(slots: Bulkhead, metrics: ServiceMetrics) {
        self.slots = slots
        self.metrics = metrics
    }

    public func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard slots.tryAcquire() else {
            metrics.requestShed(.inFlight)
            context.logger.debug("Request shed: MAX_IN_FLIGHT requests in flight", metadata: ["max_in_flight": "\(slots.capacity)"])
            return Problem.overloaded("This instance has as many requests in flight as it may; retry shortly.").response()
        }
        metrics.requestsInFlight(slots.inUse)
        defer {
            slots.release()
            metrics.requestsInFlight(slots.inUse)
        }
        return try await next(request, context)
    }
}
