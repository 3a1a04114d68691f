public import HTTPTypes
public import Hummingbird
public import NotificationsCore

/// An RFC 9457 problem: every error response of the service is one of these.
///
/// `{"type", "title", "status", "detail", "code"}` with `application/problem+json`; extra
/// headers (`Retry-After`, `Allow`) ride along. It renders itself, so nothing internal
/// (driver messages, stack traces) can reach a client.
public struct Problem: HTTPResponseError, Sendable {
    public var status: HTTPResponse.Status
    public var code: String
    public var title: String
    public var detail: String
    public var headers: HTTPFields

    public init(_ status: HTTPResponse.Status, code: String, title: String, detail: String, headers: HTTPFields = [:]) {
        self.status = status
        self.code = code
        self.title = title
        self.detail = detail
        self.headers = headers
    }

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        response()
    }

    public func response() -> Response {
        var json = JSONWriter()
        json.object { object in
            object.string("type", "urn:problem-type:notifications:\(code)")
            object.string("title", title)
            object.integer("status", Int(status.code))
            object.string("detail", detail)
            object.string("code", code)
        }
        var fields = headers
        fields[.contentType] = "application/problem+json"
        return Response(status: status, headers: fields, body: .init(byteBuffer: ByteBuffer(bytes: json.bytes)))
    }
}

extension Problem {
    public static func validation(_ error: ValidationError) -> Problem {
        Problem(.badRequest, code: "validation_failed", title: "Validation failed", detail: error.detail)
    }

    public static func malformedJSON() -> Problem {
        Problem(.badRequest, code: "malformed_json", title: "Malformed JSON", detail: "The request body is not valid JSON.")
    }

    public static func unsupportedMediaType() -> Problem {
        Problem(.unsupportedMediaType, code: "unsupported_media_type", title: "Unsupported media type", detail: "Send the body as application/json.")
    }

    public static func payloadTooLarge() -> Problem {
        Problem(.contentTooLarge, code: "payload_too_large", title: "Payload too large", detail: "Request bodies are limited to \(RequestBody.maxBytes) bytes.")
    }

    public static func unauthorized() -> Problem {
        Problem(.unauthorized, code: "unauthorized", title: "Unauthorized", detail: "A valid bearer API key is required.",
                headers: [.wwwAuthenticate: "Bearer"])
    }

    /// A user token that cannot be used (RFC 6750's `invalid_token`).
    public static func invalidToken(_ detail: String) -> Problem {
        Problem(.unauthorized, code: "unauthorized", title: "Unauthorized", detail: detail,
                headers: [.wwwAuthenticate: #"Bearer error="invalid_token""#])
    }

    public static func forbidden(_ detail: String) -> Problem {
        Problem(.forbidden, code: "forbidden", title: "Forbidden", detail: detail)
    }

    public static func notFound(_ detail: String = "No such resource.") -> Problem {
        Problem(.notFound, code: "not_found", title: "Not found", detail: detail)
    }

    public static func methodNotAllowed(allowed: [HTTPRequest.Method]) -> Problem {
        let allow = allowed.map(\.rawValue).joined(separator: ", ")
        return Problem(.methodNotAllowed, code: "method_not_allowed", title: "Method not allowed",
                       detail: "This resource supports \(allow).", headers: [.allow: allow])
    }

    public static func storageUnavailable() -> Problem {
        Problem(.serviceUnavailable, code: "storage_unavailable", title: "Storage unavailable",
                detail: "The notification store is not answering; retry shortly.", headers: [.retryAfter: "1"])
    }

    /// 503 `overloaded`: this instance sheds the request without doing any of it.
    public static func overloaded(_ detail: String, retryAfterSeconds: Int = 1) -> Problem {
        Problem(.serviceUnavailable, code: "overloaded", title: "Overloaded", detail: detail, headers: [.retryAfter: String(retryAfterSeconds)])
    }

    public static func internalError() -> Problem {
        Problem(.internalServerError, code: "internal_error", title: "Internal error", detail: "The request could not be completed.")
    }
}
