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
