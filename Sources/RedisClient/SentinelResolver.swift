public import Logging
public import NIOCore
internal import NIOPosix
internal import Synchronization

/// A Redis endpoint.
public struct RedisAddress: Sendable, Hashable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// `host:port`, as `REDIS_SENTINELS` lists them.
    public init?(parsing text: some StringProtocol) {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), (1...65535).contains(port) else { return nil }
        let host = String(text[..<colon])
        guard !host.isEmpty else { return nil }
        self.init(host: host, port: port)
    }

    public var description: String { "\(host):\(port)" }
}

/// Where the master is, asked of Redis Sentinel (`SENTINEL get-master-addr-by-name`).
///
/// The answer is cached until `invalidate()`: the pool calls it when a connection is refused or
/// a write meets `-READONLY` (the old master became a replica), and the `+switch-master`
/// listener when a failover is announced. The sentinels are asked in turn; the first answer
/// that the named server confirms (`ROLE` says `master`) wins: a sentinel cut off from the
/// others during a failover still names the old master, which is a replica by then.
public final class SentinelResolver: Sendable {
    public let sentinels: [RedisAddress]
    public let masterName: String
    /// How to log in to the master (`REDIS_URL`'s password and database) for the `ROLE` check.
    private let credentials: RedisConfiguration
    private let logger: Logger
    private let cached = Mutex<RedisAddress?>(nil)

    public init(sentinels: [RedisAddress], masterName: String, credentials: RedisConfiguration = RedisConfiguration(), logger: Logger) {
        self.sentinels = sentinels
        self.masterName = masterName
        self.credentials = credentials
        self.logger = logger
    }

    public func invalidate() {
        cached.withLock { $0 = nil }
    }

    /// The master's address, from the cache or the sentinels, before `deadline`.
    public func master(on eventLoop: any EventLoop, deadline: NIODeadline) async throws(RedisError) -> RedisAddress {
        if let known = cached.withLock({ $0 }) { return known }
        var lastError = RedisError.connectionRefused("no sentinel answered for \(masterName)")
        for sentinel in sentinels {
            do {
                let address = try await ask(sentinel, on: eventLoop, deadline: deadline)
                guard try await isMaster(address, on: eventLoop, deadline: deadline) else {
                    logger.warning("A sentinel names a Redis that is not the master; asking the next", metadata: ["sentinel": "\(sentinel)", "named": "\(address)"])
                    lastError = .connectionRefused("sentinel \(sentinel) names \(address), which is not a master")
                    continue
                }
                let changed = cached.withLock { cached -> Bool in
                    defer { cached = address }
                    return cached != address
                }
                if changed { logger.info("Redis master from Sentinel", metadata: ["master": "\(address)", "sentinel": "\(sentinel)"]) }
                return address
            } catch {
                lastError = error
            }
        }
        throw lastError
    }

    /// Whether the server at `address` says it is a master (`ROLE`).
    private func isMaster(_ address: RedisAddress, on eventLoop: any EventLoop, deadline: NIODeadline) async throws(RedisError) -> Bool {
        var configuration = credentials
        configuration.host = address.host
        configuration.port = address.port
        let connection = try await RedisConnection.connect(to: configuration, on: eventLoop, deadline: deadline)
        defer { connection.close() }
        let reply = try await connection.send(RedisCommand("ROLE", []), deadline: deadline)
        return reply.array?.first?.string == "master"
    }

    private func ask(_ sentinel: RedisAddress, on eventLoop: any EventLoop, deadline: NIODeadline) async throws(RedisError) -> RedisAddress {
        let configuration = RedisConfiguration(host: sentinel.host, port: sentinel.port)
        let connection = try await RedisConnection.connect(to: configuration, on: eventLoop, deadline: deadline)
        defer { connection.close() }
        let reply = try await connection.send(RedisCommand("SENTINEL", ["get-master-addr-by-name", masterName]), deadline: deadline)
        guard case .array(let parts) = reply, parts.count == 2, let host = parts[0].string, let port = parts[1].string.flatMap({ Int($0) }) else {
            throw .protocolError("sentinel \(sentinel) does not know master \(masterName)")
        }
        return RedisAddress(host: host, port: port)
    }
}
