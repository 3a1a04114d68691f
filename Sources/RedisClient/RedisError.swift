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
    /// The caller stopped waiting (its task was cancelled): says nothing about Redis.
    case cancelled
    /// Failed only because another call on the same connection failed first (its deadline
    /// passed, or the connection broke under it): one connection failure, reported once as
    /// that first call's error and as `aborted` for the rest of the pipeline.
    case aborted(String)

    /// Builds a typed server error from the text of an error reply ("OOM command not allowed ...").
    public static func fromErrorReply(_ text: String) -> RedisError {
        let code = text.prefix { $0 != " " }
        return .server(code: String(code), message: text)
    }

    /// Whether the error says something about Redis's health (what a circuit breaker counts):
    /// not a caller's cancellation, and not a call that only shared a connection with the
    /// failure another call already reports.
    public var isRedisFailure: Bool {
        switch self {
        case .cancelled, .aborted, .shutdown: false
        default: true
        }
    }

    public var description: String {
        switch self {
        case .connectionRefused(let reason): "redis connection refused: \(reason)"
        case .connectionClosed: "redis connection closed"
        case .timeout: "redis operation timed out"
        case .server(_, let message): "redis error reply: \(message)"
        case .protocolError(let reason): "redis protocol error: \(reason)"
        case .shutdown: "redis client shut down"
        case .cancelled: "redis call cancelled by its caller"
        case .aborted(let cause): "redis call aborted with its connection: \(cause)"
        }
    }
}
