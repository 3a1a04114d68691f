internal import HTTPTypes
public import Hummingbird
internal import Logging
internal import NotificationsCore

/// Outermost: gives each request an id (`X-Request-Id`, echoed from the client when sane, else
/// generated), returns it in the response, and makes every log line written while serving the
/// request carry it (`RequestID.current`, added by the logging system's metadata provider).
/// Writes one access-log line at debug level, or at warning for a 5xx other than 503. Never
/// logs headers, so keys and tokens cannot reach the logs.
public struct RequestLogMiddleware: RouterMiddleware {
    public typealias Context = AppRequestContext

    public init() {}

    public func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let requestID = request.headers[.requestID].flatMap(RequestID.sanitized) ?? context.id
        let start = ContinuousClock.now
        var response = try await RequestID.$current.withValue(requestID) { try await next(request, context) }
        response.headers[.requestID] = requestID
        // A 503 is an expected answer under overload or an outage (shed, storage or Redis
        // unavailable): counted in metrics and logged once by what caused it, not once per request,
        // so an overloaded instance does not also flood its log. Other 5xx are warnings.
        let failed = response.status.code >= 500 && response.status != .serviceUnavailable
        guard failed || context.logger.logLevel <= .debug else { return response }
        let elapsed = ContinuousClock.now - start
        let metadata: Logger.Metadata = [
            "method": .string(request.method.rawValue), "path": .string(request.uri.path),
            "status": .stringConvertible(response.status.code), "duration_ms": .stringConvertible(elapsed.milliseconds),
        ]
        RequestID.$current.withValue(requestID) {
            if failed {
                context.logger.warning("Request failed", metadata: metadata)
            } else {
                context.logger.debug("Request", metadata: metadata)
            }
        }
        return response
    }
}

extension HTTPField.Name {
    static let requestID = HTTPField.Name("X-Request-Id")!
}

extension Duration {
    var milliseconds: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) * 1000 + Double(attoseconds) / 1e15
    }
}
