public import ServiceLifecycle

/// What a feature sends to Redis, wherever Redis is: one server (`RedisConnectionPool`) or the
/// master of one slot of a cluster (`RedisCluster.Route`).
public protocol RedisCommands: Sendable {
    /// Sends one command. Throws only `RedisError`; an error reply is `RedisError.server`.
    func send(_ command: RedisCommand) async throws -> RESPValue
    /// Runs a Lua script (by `EVALSHA`, loaded on first use).
    func evaluate(_ script: RedisScript, keys: [String], arguments: [String]) async throws -> RESPValue
}

extension RedisConnectionPool: RedisCommands {}

/// A pub/sub connection (or a set of them) that channels are added to and removed from while
/// it runs: one `RedisSubscriber`, or a `ClusterSubscriber` with one per master.
public protocol ChannelSubscriber: Service, Sendable {
    func subscribe(_ channel: String)
    func unsubscribe(_ channel: String)
    /// Drops the connections; they are made again (a failover elsewhere was announced).
    func disconnect()
}
