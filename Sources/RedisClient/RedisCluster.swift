public import Logging
public import NIOCore
public import ServiceLifecycle
internal import Synchronization

/// A Redis Cluster: the slot map, a connection pool per node, and the redirections.
///
/// The map is read with `CLUSTER SHARDS` (or `CLUSTER SLOTS`) from the known nodes, asked
/// together; the view most of them give wins (during a failover a node may still name the
/// old master for a moment). A call goes to its slot's master. `MOVED` (the slot lives
/// elsewhere now) moves the slot in the map at once, asks for a full read and retries
/// there; `ASK` (the slot is being migrated and this key already left) is followed with
/// `ASKING` for that one call; `TRYAGAIN` (a multi-key call during a migration) is retried
/// shortly within the same deadline. A node that cannot be reached also asks for a read:
/// until every master of the map answers again, the map is read every second, which is how
/// a replica's promotion is seen without any call being made to the dead master (its
/// circuit is open).
public final class RedisCluster: Service, Sendable {
    public let seeds: [RedisAddress]
    /// Credentials, database, per-call deadline and connections per node.
    public let configuration: RedisConfiguration
    private let eventLoopGroup: any EventLoopGroup
    private let logger: Logger
    private let refreshInterval: Duration
    private let staleRefreshInterval: Duration

    /// A node the service talks to: its address, its name in logs, metrics and breakers
    /// (`host:port`, made once), and its connection pool.
    public final class Node: Sendable {
        public let address: RedisAddress
        public let name: String
        public let pool: RedisConnectionPool

        init(address: RedisAddress, pool: RedisConnectionPool) {
            self.address = address
            self.name = address.description
            self.pool = pool
        }
    }

    private struct State {
        var map: ClusterSlotMap?
        var nodes: [RedisAddress: Node] = [:]
        /// A redirection or an unreachable node was seen since the last complete read.
        var stale = true
        var refreshing: Task<Bool, Never>?
        var closed = false
    }

    private let state = Mutex(State())
    private let moved = Atomic<Int>(0)
    private let asked = Atomic<Int>(0)
    private let listeners = Mutex<[@Sendable (ClusterSlotMap) -> Void]>([])

    public init(
        seeds: [RedisAddress], configuration: RedisConfiguration, eventLoopGroup: any EventLoopGroup, logger: Logger,
        refreshInterval: Duration = .seconds(10), staleRefreshInterval: Duration = .seconds(1)
    ) {
        self.seeds = seeds
        self.configuration = configuration
        self.eventLoopGroup = eventLoopGroup
        self.logger = logger
        self.refreshInterval = refreshInterval
        self.staleRefreshInterval = staleRefreshInterval
    }

    /// `MOVED` and `ASK` redirections followed so far.
    public var redirections: (moved: Int, asked: Int) { (moved.load(ordering: .relaxed), asked.load(ordering: .relaxed)) }

    /// The map last read (nil until the first read succeeds).
    public var map: ClusterSlotMap? { state.withLock { $0.map } }

    public func master(forSlot slot: Int) -> RedisAddress? {
        state.withLock { $0.map?.master(forSlot: slot) }
    }

    /// The master of `slot` as a node (one lock, no allocation once the node is known: every call asks).
    public func node(forSlot slot: Int) -> Node? {
        state.withLock { state in
            guard let address = state.map?.master(forSlot: slot) else { return nil }
            return node(address, in: &state)
        }
    }

    /// Called with the new map whenever a read changes it (not for single `MOVED` slot moves).
    public func onMapChange(_ listener: @escaping @Sendable (ClusterSlotMap) -> Void) {
        listeners.withLock { $0.append(listener) }
    }

    /// The pool of one node (made on first use; kept, as a node that left may come back).
    public func pool(for address: RedisAddress) -> RedisConnectionPool {
        state.withLock { node(address, in: &$0) }.pool
    }

    private func node(_ address: RedisAddress, in state: inout State) -> Node {
        if let known = state.nodes[address] { return known }
        var target = configuration
        target.host = address.host
        target.port = address.port
        // Making a pool connects nothing: it is cheap enough to do under the lock.
        let pool = RedisConnectionPool(configuration: target, eventLoopGroup: eventLoopGroup, logger: logger.with(node: address))
        if state.closed { pool.close() }
        let made = Node(address: address, pool: pool)
        state.nodes[address] = made
        return made
    }

    /// Commands for the master of `slot`, following the cluster's redirections; nil while no
    /// master of it is known.
    public func route(slot: Int) -> Route? {
        node(forSlot: slot).map { Route(cluster: self, slot: slot, node: $0) }
    }

    public struct Route: RedisCommands {
        let cluster: RedisCluster
        public let slot: Int
        /// The slot's master when the route was made (where the call goes first).
        public let node: Node

        /// Every key of `command` must be in `slot`: a key of another slot would be answered by
        /// the node that owns it, with `MOVED`, not by this route's master; it is refused before
        /// it is sent, as a cluster refuses keys of two slots (`CROSSSLOT`).
        public func send(_ command: RedisCommand) async throws -> RESPValue {
            if let keys = command.keyIndices, let stray = keys.first(where: { HashSlot.of(bytes: command.arguments[$0]) != slot }) {
                throw Self.crossSlot(String(decoding: command.arguments[stray], as: UTF8.self), slot)
            }
            return try await cluster.redirecting(slot: slot, from: node) { pool, deadline throws(RedisError) in
                try await pool.send(command, deadline: deadline)
            } asking: { pool, deadline throws(RedisError) in
                try await pool.sendAsking(command, deadline: deadline)
            }
        }

        /// Every key must be in `slot` (the cluster would refuse the script with `CROSSSLOT`; so does this, before sending).
        public func evaluate(_ script: RedisScript, keys: [String], arguments: [String]) async throws -> RESPValue {
            if let stray = keys.first(where: { HashSlot.of($0) != slot }) {
                throw Self.crossSlot(stray, slot)
            }
            return try await cluster.redirecting(slot: slot, from: node) { pool, deadline throws(RedisError) in
                try await pool.evaluate(script, keys: keys, arguments: arguments, deadline: deadline)
            } asking: { pool, deadline throws(RedisError) in
                try await pool.sendAsking(RedisCommand("EVAL", [script.source, String(keys.count)] + keys + arguments), deadline: deadline)
            }
        }

        /// The route's master ready to take `script` at once (see `RedisConnectionPool.prepared`).
        /// A redirection in its reply is for the caller to follow, by `evaluate`.
        public func prepared(_ script: RedisScript, atSlot slot: Int? = nil) -> PreparedScript? {
            node.pool.prepared(script, atSlot: slot)
        }

        static func crossSlot(_ key: String, _ slot: Int) -> RedisError {
            .server(code: "CROSSSLOT", message: "CROSSSLOT key \(key) is not in slot \(slot)")
        }
    }

    private func redirecting(
        slot: Int, from first: Node,
        _ body: (RedisConnectionPool, NIODeadline) async throws(RedisError) -> RESPValue,
        asking: (RedisConnectionPool, NIODeadline) async throws(RedisError) -> RESPValue
    ) async throws(RedisError) -> RESPValue {
        let deadline = NIODeadline.now() + .milliseconds(configuration.operationTimeoutMilliseconds)
        var target = first.address
        var targetPool = first.pool
        var redirections = 0
        // Set by an `ASK`: this one attempt goes to the importing node, with `ASKING`.
        var importing: RedisAddress?
        while true {
            // ASK and TRYAGAIN repeat while a migration goes on: bounded by the call's deadline.
            guard NIODeadline.now() < deadline else { throw .timeout }
            do {
                if let node = importing {
                    return try await asking(pool(for: node), deadline)
                }
                return try await body(targetPool, deadline)
            } catch .server(code: "MOVED", let message) where redirections < 5 {
                guard let moved = Self.redirection(message, from: importing ?? target) else { throw .protocolError(message) }
                state.withLock { $0.map?.assign(slot: slot, to: moved) }
                self.moved.add(1, ordering: .relaxed)
                requestRefresh()
                target = moved
                targetPool = pool(for: moved)
                importing = nil
                redirections += 1
            } catch .server(code: "ASK", let message) where importing == nil {
                guard let node = Self.redirection(message, from: target) else { throw .protocolError(message) }
                asked.add(1, ordering: .relaxed)
                importing = node
            } catch let error where error.meansSlotIsMigrating {
                // The call's keys are split between the two nodes of a migration for a moment
                // (`TRYAGAIN`), or a script reads a key it derives (a cache entry from its
                // version) that the migration put out of this node's reach: from the start (the
                // owner again), shortly, within the same deadline.
                guard NIODeadline.now() + .milliseconds(25) < deadline else { throw error }
                try? await Task.sleep(for: .milliseconds(25))
                importing = nil
            } catch {
                if error.meansTopologyMayHaveChanged { requestRefresh() }
                throw error
            }
        }
    }

    /// The address of a `MOVED`/`ASK` reply ("MOVED 3999 127.0.0.1:6381"; an empty host is the replying node's).
    static func redirection(_ message: String, from node: RedisAddress) -> RedisAddress? {
        let parts = message.split(separator: " ")
        guard parts.count >= 3 else { return nil }
        let endpoint = parts[2]
        if endpoint.hasPrefix(":"), let port = Int(endpoint.dropFirst()) { return RedisAddress(host: node.host, port: port) }
        return RedisAddress(parsing: endpoint)
    }

    /// Asks for a read of the map soon (at once if none runs); calls do not wait for it.
    public func requestRefresh() {
        state.withLock { $0.stale = true }
        _ = startRefresh()
    }

    /// Reads the map now (joining a read already under way). Returns whether a map was read.
    @discardableResult
    public func refresh() async -> Bool {
        await startRefresh().value
    }

    private func startRefresh() -> Task<Bool, Never> {
        state.withLock { state in
            if let running = state.refreshing { return running }
            let task = Task { await self.read() }
            state.refreshing = task
            return task
        }
    }

    /// Asks every known node (the seeds when none is known) for the map at once, and takes the
    /// view most of the answers give, once more than half of the nodes asked have answered.
    private func read() async -> Bool {
        defer { state.withLock { $0.refreshing = nil } }
        let previous = map
        var asked = previous?.nodes ?? []
        for seed in seeds where !asked.contains(seed) { asked.append(seed) }
        var answers: [(map: ClusterSlotMap, from: RedisAddress)] = []
        var lastError: RedisError?
        await withTaskGroup(of: Result<(ClusterSlotMap, RedisAddress), RedisError>.self) { group in
            for node in asked {
                group.addTask { await self.read(from: node) }
            }
            var finished = 0
            for await result in group {
                finished += 1
                switch result {
                case .success(let answer): answers.append(answer)
                case .failure(let error): lastError = error
                }
                if answers.count * 2 > asked.count { break }
            }
            group.cancelAll()
        }
        guard !answers.isEmpty else {
            logger.warning("Redis Cluster map could not be read from any node", metadata: ["asked": "\(asked.count)", "error": "\(lastError.map { "\($0)" } ?? "none")"])
            return false
        }
        var votes: [(map: ClusterSlotMap, count: Int)] = []
        for answer in answers {
            if let index = votes.firstIndex(where: { $0.map == answer.map }) { votes[index].count += 1 } else { votes.append((answer.map, 1)) }
        }
        let chosen = votes.max { $0.count < $1.count }!.map
        let answered = Set(answers.map(\.from))
        // Complete: every master of the map answered (a dead master keeps the map stale until its replica takes over).
        let complete = chosen.masters.allSatisfy(answered.contains) && chosen.uncoveredSlots == 0
        let changed = state.withLock { state -> Bool in
            let changed = state.map != chosen
            state.map = chosen
            state.stale = !complete
            return changed
        }
        if changed {
            logger.info("Redis Cluster map read", metadata: [
                "masters": "\(chosen.masters.map(\.description).joined(separator: ","))", "nodes": "\(chosen.nodes.count)",
                "uncovered_slots": "\(chosen.uncoveredSlots)",
            ])
            for listener in listeners.withLock({ $0 }) { listener(chosen) }
        }
        return true
    }

    private func read(from node: RedisAddress) async -> Result<(ClusterSlotMap, RedisAddress), RedisError> {
        let pool = pool(for: node)
        let deadline = NIODeadline.now() + .milliseconds(configuration.operationTimeoutMilliseconds)
        do throws(RedisError) {
            do {
                let reply = try await pool.send(RedisCommand("CLUSTER", ["SHARDS"]), deadline: deadline)
                return .success((try ClusterSlotMap(shards: reply, askedAt: node), node))
            } catch .server(code: "ERR", _) {
                // Before Redis 7: no CLUSTER SHARDS.
                let reply = try await pool.send(RedisCommand("CLUSTER", ["SLOTS"]), deadline: deadline)
                return .success((try ClusterSlotMap(slots: reply, askedAt: node), node))
            }
        } catch {
            return .failure(error)
        }
    }

    /// Reads the map at start, then every `refreshInterval`, or every `staleRefreshInterval`
    /// while it is stale; closes every pool at graceful shutdown.
    public func run() async throws {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                await self.refresh()
                let stale = self.state.withLock { $0.stale }
                try? await Task.sleep(for: stale ? self.staleRefreshInterval : self.refreshInterval)
            }
        }
        close()
    }

    public func close() {
        let pools = state.withLock { state -> [RedisConnectionPool] in
            state.closed = true
            return state.nodes.values.map(\.pool)
        }
        for pool in pools { pool.close() }
    }
}

extension RedisError {
    /// Only while a slot is being migrated.
    var meansSlotIsMigrating: Bool {
        switch self {
        case .server(code: "TRYAGAIN", _): true
        case .server(code: "ERR", let message): message.contains("non local key")
        default: false
        }
    }

    /// A node unreachable, or the cluster saying it is not serving: the map may be out of date.
    var meansTopologyMayHaveChanged: Bool {
        switch self {
        case .connectionRefused, .connectionClosed, .timeout: true
        case .server(let code, _): code == "CLUSTERDOWN" || code == "READONLY" || code == "MASTERDOWN"
        default: false
        }
    }
}

extension Logger {
    fileprivate func with(node: RedisAddress) -> Logger {
        var logger = self
        logger[metadataKey: "node"] = "\(node)"
        return logger
    }
}
