internal import HTTPTypes
public import Hummingbird
internal import NIOCore
public import NotificationsCore

/// `Idempotency-Key` on `/v1` POSTs: the first request is processed and its response kept
/// (`IDEMPOTENCY_TTL_SECONDS`); a repeat with the same route and body gets it again with
/// `Idempotency-Replay: true`; another route or body is 422; a repeat while the first is
/// still running is 409 with `Retry-After: 1`.
public struct IdempotencyMiddleware: RouterMiddleware {
    public typealias Context = AppRequestContext
    let store: IdempotencyStore
    let metrics: ServiceMetrics

    public init(store: IdempotencyStore, metrics: ServiceMetrics) {
        self.store = store
        self.metrics = metrics
    }

    public func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard request.method == .post, let key = request.headers[.idempotencyKey] else { return try await next(request, context) }
        guard Self.isValid(key) else {
            throw Problem.validation(ValidationError(field: "Idempotency-Key", "must be 1 to 255 printable ASCII characters"))
        }
        // Keys are the caller's own: an API key's, or a user's (all of that user's tokens).
        guard let scope = context.principalName else { throw Problem.unauthorized() }
        var request = request
        let body = try await RequestBody.collect(&request)
        let fingerprint = IdempotencyStore.fingerprint(method: request.method.rawValue, path: request.uri.path, body: Array(body.readableBytesView))

        switch try await store.begin(scope: scope, key: key, fingerprint: fingerprint) {
        case .replay(let stored):
            var headers: HTTPFields = [.contentType: stored.contentType, .idempotencyReplay: "true"]
            if let location = stored.location { headers[.location] = location }
            return Response(status: .init(code: stored.status), headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: stored.body)))
        case .inProgress:
            throw Problem(.conflict, code: "idempotency_in_progress", title: "Request in progress",
                          detail: "A request with this Idempotency-Key is still being processed.", headers: [.retryAfter: "1"])
        case .mismatch:
            throw Problem(.unprocessableContent, code: "idempotency_key_reused", title: "Idempotency key reused",
                          detail: "This Idempotency-Key was used with another route or body.")
        case .proceed(let claim):
            var response: Response
            var context = context
            context.idempotencyClaim = claim
            do {
                response = try await next(request, context)
            } catch {
                response = ProblemMiddleware.problem(for: error, logger: context.logger, metrics: metrics).response()
            }
            guard Self.isFinal(response.status) else {
                await store.release(claim)
                return response
            }
            let bytes = try await Self.collect(&response)
            await store.complete(claim, response: .init(
                status: Int(response.status.code), body: bytes, contentType: response.headers[.contentType] ?? "application/json",
                location: response.headers[.location]))
            return response
        }
    }

    /// 1–255 printable ASCII characters (space to tilde).
    static func isValid(_ key: String) -> Bool {
        (1...255).contains(key.utf8.count) && key.utf8.allSatisfy { $0 >= 0x20 && $0 <= 0x7E }
    }

    /// Responses a repeat should get again. Server errors and transient conflicts (busy lock,
    /// rate limit) release the key instead, so a retry is processed.
    static func isFinal(_ status: HTTPResponse.Status) -> Bool {
        status.code < 500 && status != .conflict && status != .tooManyRequests
    }

    /// Reads a response body (ours are small JSON buffers) and puts it back.
    static func collect(_ response: inout Response) async throws -> [UInt8] {
        let sink = CollectingWriter.Sink()
        try await response.body.write(CollectingWriter(sink: sink))
        response.body = .init(byteBuffer: sink.buffer)
        return Array(sink.buffer.readableBytesView)
    }
}

/// A `ResponseBodyWriter` that keeps what is written.
private struct CollectingWriter: ResponseBodyWriter {
    final class Sink: @unchecked Sendable {
        // Written by one task at a time: the body's own write, awaited by `collect`.
        var buffer = ByteBuffer()
    }

    let sink: Sink

    mutating func write(_ buffer: ByteBuffer) async throws {
        var copy = buffer
        sink.buffer.writeBuffer(&copy)
    }

    consuming func finish(_ trailingHeaders: HTTPFields?) async throws {}
}

extension HTTPField.Name {
    static let idempotencyKey = HTTPField.Name("Idempotency-Key")!
    static let idempotencyReplay = HTTPField.Name("Idempotency-Replay")!
}
