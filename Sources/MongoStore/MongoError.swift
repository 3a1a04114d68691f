internal import CMongoc

/// Why a MongoDB call failed; the driver's own message is kept for logs, never for responses.
public enum MongoError: Error, Sendable, Equatable, CustomStringConvertible {
    /// No server could be reached (server selection, socket error, connection closed).
    case unavailable(String)
    /// The call did not finish within `MONGODB_OPERATION_TIMEOUT_MS`.
    case timeout
    /// A unique index rejected the write (server error 11000).
    case duplicateKey(String)
    /// The server answered with an error.
    case server(code: Int, message: String)
    case invalidURI(String)
    /// The client pool has been shut down.
    case shutdown
    /// Too many calls were already waiting for a thread: this one was refused without running.
    case overloaded

    public var description: String {
        switch self {
        case .unavailable(let message): "mongodb unavailable: \(message)"
        case .timeout: "mongodb operation timed out"
        case .duplicateKey(let message): "duplicate key: \(message)"
        case .server(let code, let message): "mongodb error \(code): \(message)"
        case .invalidURI(let message): "invalid MongoDB URI: \(message)"
        case .shutdown: "mongodb client shut down"
        case .overloaded: "mongodb work queue full"
        }
    }

    /// True when the store as a whole is unusable (as opposed to this one request being wrong),
    /// so a write may or may not have been applied. `.overloaded` is not: that call never ran.
    public var isUnavailable: Bool {
        switch self {
        case .unavailable, .timeout, .shutdown: true
        case .duplicateKey, .server, .invalidURI, .overloaded: false
        }
    }

    static let duplicateKeyCodes: Set<Int> = [11000, 11001, 12582]
    /// WriteConflict: the server applied nothing (the dev MongoDB-wire server also reports a busy database this way).
    static let writeConflictCodes: Set<Int> = [112]

    /// Maps libmongoc's `bson_error_t` (error API version 2) in one place.
    init(_ error: bson_error_t) {
        let message = withUnsafeBytes(of: error.message) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        let code = Int(error.code)
        switch error.domain {
        case UInt32(MONGOC_ERROR_SERVER.rawValue), UInt32(MONGOC_ERROR_WRITE_CONCERN.rawValue), UInt32(MONGOC_ERROR_QUERY.rawValue):
            self = Self.duplicateKeyCodes.contains(code) ? .duplicateKey(message) : .server(code: code, message: message)
        case UInt32(MONGOC_ERROR_STREAM.rawValue), UInt32(MONGOC_ERROR_SERVER_SELECTION.rawValue),
            UInt32(MONGOC_ERROR_PROTOCOL.rawValue), UInt32(MONGOC_ERROR_CLIENT.rawValue):
            self = .unavailable(message)
        default:
            self = .server(code: code, message: message)
        }
    }
}
