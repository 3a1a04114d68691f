public import NIOCore

/// A Lua script run with `EVALSHA`; the pool caches its SHA-1 as Redis reports it from `SCRIPT LOAD`.
public struct RedisScript: Sendable, Hashable {
    public let source: String

    public init(_ source: String) {
        self.source = source
    }

    func evalsha(_ sha: String, keys: [String], arguments: [String]) -> RedisCommand {
        RedisCommand("EVALSHA", [sha, String(keys.count)] + keys + arguments)
    }
}

/// A script call ready to go out on an open connection (`RedisConnectionPool.prepared`).
public struct PreparedScript: Sendable {
    let connection: RedisConnection
    let sha: String
    let script: RedisScript
    let deadline: NIODeadline
    /// The pool's connection it goes on (see `RedisConnectionPool.prepared(_:atSlot:)`).
    public let slot: Int

    /// Sends `EVALSHA` now; the future holds the raw reply (an error reply, `NOSCRIPT` included, is `.error`).
    public func submit(keys: [String], arguments: [String]) -> EventLoopFuture<RESPValue> {
        connection.submit(script.evalsha(sha, keys: keys, arguments: arguments), deadline: deadline)
    }
}
