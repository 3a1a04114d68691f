internal import HTTPTypes
public import Hummingbird
internal import Logging
public import NotificationsCore

/// Turns every error into a problem+json response, so no request ever gets a bare 500 or a
/// driver message. Also rejects bodies whose declared length is over the limit (413) before
/// anything reads them, and answers 405 (with `Allow`) for known paths with another method.
public struct ProblemMiddleware: RouterMiddleware {
    public typealias Context = AppRequestContext
    let routes: RouteTable
    let metrics: ServiceMetrics

    public init(routes: RouteTable, metrics: ServiceMetrics) {
        self.routes = routes
        self.metrics = metrics
    }

    public func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        if let length = request.headers[.contentLength].flatMap({ Int($0) }), length > RequestBody.maxBytes {
            return Problem.payloadTooLarge().response()
        }
        do {
            return try await next(request, context)
        } catch let error as any HTTPResponseError where !(error is Problem) {
            return translate(error.status, request: request).response()
        } catch {
            return Self.problem(for: error, logger: context.logger, metrics: metrics).response()
        }
    }

    /// The problem for an error thrown by a handler: contract errors as they are, a store
    /// outage as 503 `storage_unavailable`, anything else as a generic 500 (logged by type only).
    static func problem(for error: any Error, logger: Logger, metrics: ServiceMetrics) -> Problem {
        switch error {
        case let problem as Problem:
            return problem
        case let error as ValidationError:
            return .validation(error)
        case LockError.busy:
            return Problem(.conflict, code: "lock_busy", title: "Busy", detail: "Another request is doing this work; retry shortly.",
                           headers: [.retryAfter: "1"])
        case LockError.unavailable(let retryAfter):
            return Problem(.serviceUnavailable, code: "lock_unavailable", title: "Lock unavailable",
                           detail: "The distributed lock cannot be taken right now; retry later.", headers: [.retryAfter: String(retryAfter)])
        case StoreError.overloaded:
            metrics.requestShed(.storageQueue)
            logger.debug("Request shed: the MongoDB work queue is full")
            return .overloaded("This instance has as much storage work queued as it may; retry shortly.")
        case let error as StoreError:
            logger.warning("Store unavailable", metadata: ["error": "\(error)"])
            return .storageUnavailable()
        default:
            logger.error("Unhandled error", metadata: ["error": "\(String(reflecting: type(of: error)))"])
            return .internalError()
        }
    }

    private func translate(_ status: HTTPResponse.Status, request: Request) -> Problem {
        switch status {
        case .notFound:
            let allowed = routes.methods(for: request.uri.path)
            return allowed.isEmpty ? .notFound("No resource at this path.") : .methodNotAllowed(allowed: allowed)
        case .contentTooLarge: return .payloadTooLarge()
        case .badRequest: return Problem(.badRequest, code: "validation_failed", title: "Bad request", detail: "The request is not valid.")
        default:
            return Problem(status, code: status.code >= 500 ? "internal_error" : "validation_failed", title: status.reasonPhrase, detail: status.reasonPhrase)
        }
    }
}
