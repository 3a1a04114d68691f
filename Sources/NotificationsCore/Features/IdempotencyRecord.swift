/// A stored response of an idempotent request, or the claim of one still in progress.
public struct IdempotencyRecord: Sendable, Equatable {
    public struct StoredResponse: Sendable, Equatable {
        public var status: Int
        public var body: [UInt8]
        public var contentType: String
        public var location: String?

        public init(status: Int, body: [UInt8], contentType: String, location: String?) {
            self.status = status
            self.body = body
            self.contentType = contentType
            self.location = location
        }
    }

    /// SHA-256 (hex) of method, path and body: a repeat must match it.
    public var fingerprint: String
    /// nil while the first request is still in progress.
    public var response: StoredResponse?
    public var expiresAt: Timestamp

    /// Compact JSON for the Redis copy.
    var redisValue: [UInt8] {
        var json = JSONWriter()
        json.object { object in
            object.string("fp", fingerprint)
            object.integer("exp", Int(expiresAt.milliseconds))
            if let response {
                object.integer("status", response.status)
                object.string("type", response.contentType)
                object.string("location", response.location)
                object.string("body", String(decoding: response.body, as: UTF8.self))
            }
        }
        return json.bytes
    }

    init(fingerprint: String, response: StoredResponse?, expiresAt: Timestamp) {
        self.fingerprint = fingerprint
        self.response = response
        self.expiresAt = expiresAt
    }

    init?(redisValue bytes: [UInt8]) {
        guard case .object(let members)? = try? JSONValue.parse(bytes), case .string(let fingerprint)? = members["fp"],
            case .integer(let expiry)? = members["exp"]
        else { return nil }
        var response: StoredResponse?
        if case .integer(let status)? = members["status"], case .string(let body)? = members["body"], case .string(let type)? = members["type"] {
            var location: String?
            if case .string(let text)? = members["location"] { location = text }
            response = StoredResponse(status: Int(status), body: Array(body.utf8), contentType: type, location: location)
        }
        self.init(fingerprint: fingerprint, response: response, expiresAt: Timestamp(milliseconds: expiry))
    }
}
