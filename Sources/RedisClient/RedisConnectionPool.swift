public import Logging
public import NIOCore
internal import NIOPosix
public import ServiceLifecycle
internal import Synchronization

/// A few pipelined connections to one Redis, reconnecting with exponential backoff.
///
/// Calls pick a connection round-robin. A connection that died is replaced on next use;
/// while a reconnect is backing off, calls fail at once with the last connect error, so
/// an outage costs callers no waiting (the circuit breaker above decides what to do).
public final class RedisConnectionPool: Service, Sendable {
    public let configuration: RedisConfiguration
    private let eventLoopGroup: any EventLoopGroup
    private let logger: Logger
    private let slots: [Slot]
    private let nextSlot = Atomic<Int>(0)
    private let scriptHashes = Mutex<[String: String]>([:])
    /// With Redis Sentinel: where the master is (connections go there, and are rebuilt after a failover).
    public let sentinel: SentinelResolver?

    public init(configuration: RedisConfiguration, eventLoopGroup: any EventLoopGroup, logger: Logger, sentinel: SentinelResolver? = nil) {
        self.configuration = configuration
        self.eventLoopGroup = eventLoopGroup
        self.logger = logger
        self.sentinel = sentinel
        // Connection i on event loop i (mod the loops): every pool spreads its connections evenly
        // over the loops, the same way. Picked at random (`any()` at connect time), a pool's
        // connections could all land on one loop, a difference between two otherwise equal
        // instances measured as ±10 % throughput; and `prepared(_:atSlot:)` relies on slot i
        // being on the same loop in every pool.
        let loops = Array(eventLoopGroup.makeIterator())
        self.slots = (0..<max(1, configuration.connectionCount)).map { Slot(loop: loops[$0 % loops.count]) }
    }

    /// Closes every connection (they reconnect on next use): after a Sentinel failover.
    public func reconnectAll() {
        for slot in slots { slot.drop() }
    }

    /// A `-READONLY` reply means the server we write to is a replica now (a failover happened):
    /// ask the sentinels again and reconnect.
    private func noteFailure(_ error: RedisError) {
        guard let sentinel else { return }
        switch error {
        case .server(code: "READONLY", _):
            sentinel.invalidate()
            reconnectAll()
        case .connectionRefused:
            // The next connect asks the sentinels again (backoff still applies).
            sentinel.invalidate()
        default:
            break
        }
    }

    public var operationTimeout: TimeAmount { .milliseconds(configuration.operationTimeoutMilliseconds) }

    /// Sends one command on the next connection. Throws only `RedisError`; an error reply is `RedisError.server`.
    /// Connecting (if needed) and the command share one `REDIS_OPERATION_TIMEOUT_MS` deadline.
    public func send(_ command: RedisCommand) async throws -> RESPValue {
        try await send(command, deadline: .now() + operationTimeout)
    }

    /// `send`, within a deadline the caller already runs against (a cluster call that was redirected).
    public func send(_ command: RedisCommand, deadline: NIODeadline) async throws(RedisError) -> RESPValue {
        do {
            let connection = try await connection(deadline: deadline)
            return try await connection.send(command, deadline: deadline)
        } catch {
            noteFailure(error)
            throw error
        }
    }

    /// `ASKING` and then `command`, back to back on one connection: how a cluster node is asked
    /// about a slot it is importing (an `ASK` redirection).
    public func sendAsking(_ command: RedisCommand, deadline: NIODeadline) async throws(RedisError) -> RESPValue {
        let connection = try await connection(deadline: deadline)
        return try await connection.send(asking: command, deadline: deadline)
    }

    /// Runs a Lua script by `EVALSHA`, loading it on first use and again after `NOSCRIPT`
    /// (Redis restarted or `SCRIPT FLUSH`).
    public func evaluate(_ script: RedisScript, keys: [String], arguments: [String]) async throws -> RESPValue {
        try await evaluate(script, keys: keys, arguments: arguments, deadline: .now() + operationTimeout)
    }

    /// `evaluate`, within the caller's deadline.
    public func evaluate(_ script: RedisScript, keys: [String], arguments: [String], deadline: NIODeadline) async throws(RedisError) -> RESPValue {
        do {
            return try await evaluateTyped(script, keys: keys, arguments: arguments, deadline: deadline)
        } catch {
            noteFailure(error)
            throw error
        }
    }

    private func evaluateTyped(_ script: RedisScript, keys: [String], arguments: [String], deadline: NIODeadline) async throws(RedisError) -> RESPValue {
        let connection = try await connection(deadline: deadline)
        let sha: String
        if let known = scriptHashes.withLock({ $0[script.source] }) {
            sha = known
        } else {
            sha = try await load(script, on: connection, deadline: deadline)
        }
        do {
            return try await connection.send(script.evalsha(sha, keys: keys, arguments: arguments), deadline: deadline)
        } catch .server(code: "NOSCRIPT", _) {
            let reloaded = try await load(script, on: connection, deadline: deadline)
            return try await connection.send(script.evalsha(reloaded, keys: keys, arguments: arguments), deadline: deadline)
        }
    }

    private func load(_ script: RedisScript, on connection: RedisConnection, deadline: NIODeadline) async throws(RedisError) -> String {
        let reply = try await connection.send(RedisCommand("SCRIPT", ["LOAD", script.source]), deadline: deadline)
        guard let sha = reply.string else { throw .protocolError("SCRIPT LOAD answered \(reply)") }
        scriptHashes.withLock { $0[script.source] = sha }
        return sha
    }

    /// A script call that can be sent without waiting: a connection is up and the script is
    /// loaded. Nil otherwise (the caller then takes `evaluate`, which connects and loads).
    /// - Parameter slot: the connection to use (taken modulo the pool's size), as another pool's
    ///   `PreparedScript.slot` names it: pools of one size put the same slot on the same event
    ///   loop, so two calls sent together are written and answered on one thread. Nil: the next one.
    public func prepared(_ script: RedisScript, atSlot slot: Int? = nil) -> PreparedScript? {
        guard let sha = scriptHashes.withLock({ $0[script.source] }) else { return nil }
        let index = slot ?? nextSlot.wrappingAdd(1, ordering: .relaxed).oldValue
        guard let connection = slots[index % slots.count].readyConnection() else { return nil }
        return PreparedScript(connection: connection, sha: sha, script: script, deadline: .now() + operationTimeout, slot: index)
    }

    /// Keeps the pool until graceful shutdown, then closes every connection.
    public func run() async throws {
        try? await gracefulShutdown()
        close()
    }

    public func close() {
        for slot in slots { slot.close() }
    }

    private func connection(deadline: NIODeadline) async throws(RedisError) -> RedisConnection {
        let index = nextSlot.wrappingAdd(1, ordering: .relaxed).oldValue
        let slot = slots[index % slots.count]
        switch slot.acquire(now: .now()) {
        case .ready(let connection):
            return connection
        case .failed(let error):
            throw error
        case .wait(let future):
            return try await Self.await(future)
        case .connect(let promise, let attempt):
            let eventLoop = slot.loop
            do {
                var target = configuration
                if let sentinel {
                    let master = try await sentinel.master(on: eventLoop, deadline: deadline)
                    target.host = master.host
                    target.port = master.port
                }
                let connection = try await RedisConnection.connect(to: target, on: eventLoop, deadline: deadline)
                slot.connected(connection)
                if attempt > 0 { logger.info("Redis reconnected", metadata: ["attempts": "\(attempt)"]) }
                promise.succeed(connection)
                return connection
            } catch {
                let delay = Self.backoff(attempt: attempt)
                slot.connectFailed(error, retryAt: .now() + delay, attempt: attempt + 1)
                if attempt == 0 { logger.warning("Redis connection failed", metadata: ["error": "\(error)"]) }
                promise.fail(error)
                throw error
            }
        }
    }

    private static func await(_ future: EventLoopFuture<RedisConnection>) async throws(RedisError) -> RedisConnection {
        do {
            return try await future.get()
        } catch let error as RedisError {
            throw error
        } catch {
            throw .connectionClosed
        }
    }

    /// 50 ms, doubling, capped at 2 s.
    static func backoff(attempt: Int) -> TimeAmount {
        .milliseconds(Int64(50 << min(attempt, 5)).clamped(to: 50...2000))
    }
}

extension Comparable {
    fileprivate func clamped(to range: ClosedRange<Self>) -> Self { min(max(self, range.lowerBound), range.upperBound) }
}

/// One connection's life: none, connecting (shared by concurrent callers), ready, or backing off.
private final class Slot: Sendable {
    enum State {
        case idle(attempt: Int)
        case connecting(EventLoopFuture<RedisConnection>)
        case ready(RedisConnection)
        case backingOff(until: NIODeadline, error: RedisError, attempt: Int)
        case closed
    }

    enum Action {
        case ready(RedisConnection)
        case wait(EventLoopFuture<RedisConnection>)
        case connect(EventLoopPromise<RedisConnection>, attempt: Int)
        case failed(RedisError)
    }

    private let state = Mutex<State>(.idle(attempt: 0))
    /// The event loop the slot's connections live on.
    let loop: any EventLoop

    init(loop: any EventLoop) {
        self.loop = loop
    }

    /// The connection, if it is up now (nothing waits, nothing connects).
    func readyConnection() -> RedisConnection? {
        state.withLock { state in
            if case .ready(let connection) = state, connection.isActive { return connection }
            return nil
        }
    }

    func acquire(now: NIODeadline) -> Action {
        state.withLock { state in
            var attempt = 0
            switch state {
            case .ready(let connection) where connection.isActive:
                return .ready(connection)
            case .ready:
                attempt = 0
            case .connecting(let future):
                return .wait(future)
            case .backingOff(let until, let error, let previous):
                if now < until { return .failed(error) }
                attempt = previous
            case .idle(let previous):
                attempt = previous
            case .closed:
                return .failed(.shutdown)
            }
            let promise = loop.makePromise(of: RedisConnection.self)
            state = .connecting(promise.futureResult)
            return .connect(promise, attempt: attempt)
        }
    }

    func connected(_ connection: RedisConnection) {
        let keep = state.withLock { state -> Bool in
            if case .closed = state { return false }
            state = .ready(connection)
            return true
        }
        if !keep { connection.close() }
    }

    func connectFailed(_ error: RedisError, retryAt: NIODeadline, attempt: Int) {
        state.withLock { state in
            if case .closed = state { return }
            state = .backingOff(until: retryAt, error: error, attempt: attempt)
        }
    }

    func close() {
        let connection = state.withLock { state -> RedisConnection? in
            defer { state = .closed }
            if case .ready(let connection) = state { return connection }
            return nil
        }
        connection?.close()
    }

    /// Closes the connection, if any, and lets the next call connect afresh (at once).
    func drop() {
        let connection = state.withLock { state -> RedisConnection? in
            switch state {
            case .ready(let connection):
                state = .idle(attempt: 0)
                return connection
            case .backingOff:
                state = .idle(attempt: 0)
                return nil
            default:
                return nil
            }
        }
        connection?.close()
    }
}
