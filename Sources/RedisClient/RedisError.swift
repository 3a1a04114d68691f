/// Why a Redis call failed. Callers (the circuit breaker) decide which of these count as an outage.
public enum RedisError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The TCP connection could not be made (refused, unreachable, connect timeout) or the pool is in backoff after such a failure.
    case connectionRefused(String)
    /// The connection closed or reset while the call was in flight, or before it could be written.
    case connectionClosed
    /// No reply within the per-call deadline; the connection was closed because later replies would be misaligned.
    case timeout
    /// Redis answered with an error reply, e.g. `OOM`, `LOADING`, `READONLY`, `BUSY`, `NOSCRIPT`, `ERR`.
    case server(code: String, message: String)
    /// The byte stream was not valid RESP; the connection was closed.
    case protocolError(String)
    /// The pool has been shut down.
    case shutdown

    /// Builds a typed server error from the text of an error reply ("OOM command not allowed ...").
    public static func fromErrorReply(_ text: String) -> RedisError {
        let code = text.prefix { $0 != " " }
        return .server(code: String(code), message: text)
    }

    public var description: String {
        switch self {
        case .connectionRefused(let reason): "redis connection refused: \(reason)"
        case .connectionClosed: "redis connection closed"
        case .timeout: "redis operation timed out"
        case .server(_, let message): "redis error reply: \(message)"
        case .protocolError(let reason): "redis protocol error: \(reason)"
        case .shutdown: "redis client shut down"
        }
    }
}
