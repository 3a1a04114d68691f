internal import HTTPTypes
public import Hummingbird
internal import Logging

/// Outermost: gives each request an id (`X-Request-Id`, echoed from the client when sane) and
/// writes one access-log line at debug level, or at warning for 5xx. Never logs headers,
/// so keys and tokens cannot reach the logs.
public struct RequestLogMiddleware: RouterMiddleware {
    public typealias Context = AppRequestContext

    public init() {}

    public func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        var context = context
        let requestID = request.headers[.requestID].flatMap(Self.sane) ?? context.id
        context.logger[metadataKey: "request_id"] = .string(requestID)
        let start = ContinuousClock.now
        var response = try await next(request, context)
        response.headers[.requestID] = requestID
        let elapsed = ContinuousClock.now - start
        let metadata: Logger.Metadata = [
            "method": .string(request.method.rawValue), "path": .string(request.uri.path),
            "status": .stringConvertible(response.status.code), "duration_ms": .stringConvertible(elapsed.milliseconds),
        ]
        if response.status.code >= 500 {
            context.logger.warning("Request failed", metadata: metadata)
        } else {
            context.logger.debug("Request", metadata: metadata)
        }
        return response
    }

    /// A client-sent id is kept only if short and plain, so it cannot forge log lines.
    static func sane(_ id: String) -> String? {
        id.utf8.count <= 128 && !id.isEmpty && id.utf8.allSatisfy({ $0 > 32 && $0 < 127 }) ? id : nil
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
