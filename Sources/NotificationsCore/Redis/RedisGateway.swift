public import Logging
public import RedisClient
public import Resilience
internal import NIOCore
internal import Synchronization

/// The one way features reach Redis: per-call deadline (the pool's), the circuit breaker,
/// and the bookkeeping of every fallback.
///
/// A call returns `nil` instead of throwing when Redis cannot be used (the circuit is open,
/// half-open and already probing, or the call failed): the calling feature then takes its
/// own fallback, which this gateway has already counted in
/// `redis_operations_fallback_total{operation}`. Whether to fail open or closed is each
/// feature's decision, made with `failOpen`.
public final class RedisGateway: Sendable {
    /// Where Redis is: one server (or Sentinel's master), or a cluster.
    public enum Deployment: Sendable {
        case single(RedisConnectionPool)
        case cluster(RedisCluster)
    }

    public let deployment: Deployment
    /// One breaker, or one per cluster master.
    public let breakers: RedisBreakers
    /// A single Redis's breaker, kept at hand (every call needs it).
    private let singleBreaker: RedisBreakers.Breaker?
    public let failOpen: Bool
    let metrics: ServiceMetrics
    let logger: Logger

    public convenience init(pool: RedisConnectionPool, configuration: CircuitBreakerConfiguration, failOpen: Bool, metrics: ServiceMetrics, logger: Logger) {
        self.init(deployment: .single(pool), configuration: configuration, failOpen: failOpen, metrics: metrics, logger: logger)
    }

    public init(deployment: Deployment, configuration: CircuitBreakerConfiguration, failOpen: Bool, metrics: ServiceMetrics, logger: Logger) {
        self.deployment = deployment
        self.failOpen = failOpen
        self.metrics = metrics
        self.logger = logger
        switch deployment {
        case .single:
            breakers = RedisBreakers(configuration: configuration, perNode: false, metrics: metrics, logger: logger)
            singleBreaker = breakers.breaker()
        case .cluster(let cluster):
            let breakers = RedisBreakers(configuration: configuration, perNode: true, metrics: metrics, logger: logger)
            self.breakers = breakers
            singleBreaker = nil
            // A master that is gone (failed over, removed) takes its breaker along; a new one gets its own.
            cluster.onMapChange { map in breakers.keep(only: Set(map.masters.map(\.description))) }
        }
    }

    public var isCluster: Bool {
        if case .cluster = deployment { return true }
        return false
    }

    /// Where a call about `key` goes, and the breaker that stands for it; nil while a cluster's
    /// map does not name the slot's master yet.
    func target(for key: String) -> (node: String, breaker: RedisBreakers.Breaker, redis: any RedisCommands)? {
        switch deployment {
        case .single(let pool):
            return (RedisBreakers.single, singleBreaker ?? breakers.breaker(), pool)
        case .cluster(let cluster):
            guard let route = cluster.route(slot: HashSlot.of(key)) else {
                cluster.requestRefresh()
                return nil
            }
            return (route.node.name, breakers.breaker(for: route.node.name), route)
        }
    }

    /// The state of the breaker that stands for `key` (closed when no master is known: nothing is open).
    public func state(forKey key: String) -> CircuitState {
        target(for: key)?.breaker.state ?? .closed
    }

    /// Groups keys by the slot they hash to (one group for a single Redis, where any keys go
    /// together): a call of many users' keys is one call per group.
    public func slotGroups(_ keys: [String]) -> [[Int]] {
        guard isCluster else { return [Array(keys.indices)] }
        var groups: [Int: [Int]] = [:]
        for (index, key) in keys.enumerated() { groups[HashSlot.of(key), default: []].append(index) }
        return groups.keys.sorted().map { groups[$0]! }
    }

    /// `call` for the keys of many users: one call per slot group, run together; each group's
    /// result in the order of `slotGroups(keys)` (nil: that group fell back).
    public func callEach<T: Sendable>(
        _ operation: ServiceMetrics.Operation, keys: [String], essential: Bool = false,
        _ body: @escaping @Sendable (_ indices: [Int], any RedisCommands) async throws -> T
    ) async -> [(indices: [Int], result: T?)] {
        let groups = slotGroups(keys)
        if groups.count == 1 {
            return [(groups[0], await call(operation, key: keys[groups[0][0]], essential: essential) { try await body(groups[0], $0) })]
        }
        return await withTaskGroup(of: (Int, T?).self) { group in
            for (number, indices) in groups.enumerated() {
                group.addTask { (number, await self.call(operation, key: keys[indices[0]], essential: essential) { try await body(indices, $0) }) }
            }
            var results = [T?](repeating: nil, count: groups.count)
            for await (number, result) in group { results[number] = result }
            return zip(groups, results).map { ($0, $1) }
        }
    }

    /// The worst breaker's state (the only one's, for a single Redis).
    public var state: CircuitState { breakers.worst }

    /// Runs `listener` each time a circuit opens (also when an operator forces it open), with its node.
    public func onOpen(_ listener: @escaping @Sendable (_ node: String) -> Void) {
        breakers.onOpen(listener)
    }

    /// Set for the duration of one HTTP request (see `withRequestScope`).
    @TaskLocal static var requestScope: RequestScope?

    /// Runs one request's work so that once a Redis call of it fails, its later Redis calls (to
    /// the same node, on a cluster) take their fallbacks at once: a request waits for at most
    /// one Redis deadline per node.
    public static func withRequestScope<T>(_ body: () async throws -> T) async rethrows -> T {
        try await $requestScope.withValue(RequestScope(), operation: body)
    }

    /// Runs `body` against the Redis that holds `key` if its breaker allows it; nil means "take
    /// your fallback". Every key `body` touches must share `key`'s slot (its hash tag).
    /// - Parameter essential: a write that keeps shared state correct (cache invalidation, lock
    ///   extension and release, storing an idempotent response): tried even after an earlier
    ///   call of the same request failed, and while the circuit is half-open or forced open
    ///   (Redis may well take it); only a real OPEN circuit skips it.
    ///
    /// A cancelled call (its caller gave up) counts as nothing, and a call that only shared a
    /// connection with another call's failure is not counted again: one connection failure
    /// is one breaker failure.
    public func call<T: Sendable>(
        _ operation: ServiceMetrics.Operation, key: String, essential: Bool = false, _ body: (any RedisCommands) async throws -> T
    ) async -> T? {
        if case .reply(let value) = await attempt(operation, key: key, essential: essential, body) { return value }
        return nil
    }

    /// What became of a call: for writes whose effect must be undone when their outcome is
    /// unknown (a `SET NX` that timed out may still have been applied).
    public enum Outcome<T: Sendable>: Sendable {
        case reply(T)
        /// Redis was not called (circuit open, or an earlier call of the request failed).
        case notAttempted
        /// Sent, but no reply: Redis may or may not have applied it.
        case failed
    }

    /// `call`, telling apart "not sent" from "sent, outcome unknown".
    public func attempt<T: Sendable>(
        _ operation: ServiceMetrics.Operation, key: String, essential: Bool = false, _ body: (any RedisCommands) async throws -> T
    ) async -> Outcome<T> {
        guard let target = target(for: key) else {
            metrics.fallback(operation)
            return .notAttempted
        }
        return await attempt(operation, on: target, essential: essential, body)
    }

    private func attempt<T: Sendable>(
        _ operation: ServiceMetrics.Operation, on target: (node: String, breaker: RedisBreakers.Breaker, redis: any RedisCommands),
        essential: Bool, _ body: (any RedisCommands) async throws -> T
    ) async -> Outcome<T> {
        let scope = Self.requestScope
        let breaker = target.breaker
        let permission: RedisBreakers.Breaker.Permission =
            essential ? breaker.acquireEssential() : (scope?.redisFailed(node: target.node) == true ? .rejected : breaker.acquire())
        guard case .allowed(let probe) = permission else {
            metrics.fallback(operation)
            return .notAttempted
        }
        do {
            let result = try await body(target.redis)
            breaker.record(success: true, probe: probe)
            return .reply(result)
        } catch {
            settle(failure: error, of: operation, on: target.node, breaker: breaker, probe: probe)
            return .failed
        }
    }

    /// The bookkeeping of a call that was sent and failed: the request's scope, the fallback
    /// count, and the breaker (a cancelled caller or a non-Redis error says nothing about Redis).
    func settle(failure error: any Error, of operation: ServiceMetrics.Operation, on node: String, breaker: RedisBreakers.Breaker, probe: Bool) {
        let redisError = error as? RedisError
        if redisError == .cancelled || Task.isCancelled {
            breaker.release(probe: probe)
            return
        }
        Self.requestScope?.markFailed(node: node)
        metrics.fallback(operation)
        if let redisError, !redisError.isRedisFailure {
            breaker.release(probe: probe)
        } else {
            breakers.countFailure(node: node)
            breaker.record(success: false, probe: probe, reason: "\(error)")
        }
        logger.debug("Redis call failed; falling back", metadata: ["operation": "\(operation.rawValue)", "error": "\(error)", "node": "\(node)"])
    }

    /// The masters a cluster's map names now (one unnamed node for a single Redis).
    private var nodes: [(node: String, redis: any RedisCommands)] {
        switch deployment {
        case .single(let pool):
            return [(RedisBreakers.single, pool)]
        case .cluster(let cluster):
            return (cluster.map?.masters ?? []).map { ($0.description, cluster.pool(for: $0)) }
        }
    }

    /// A PING through each half-open breaker (not a drill's): how a circuit closes with no traffic.
    public func probeHalfOpen() async {
        await withTaskGroup(of: Void.self) { group in
            for (node, redis) in nodes {
                let breaker = breakers.breaker(for: node)
                guard breaker.state == .halfOpen, !breaker.isForcedOpen else { continue }
                group.addTask {
                    _ = await self.attempt(.healthCheck, on: (node, breaker, redis), essential: false) { try await $0.send(.ping) }
                }
            }
        }
    }

    /// Whether Redis (every master of a cluster) answers a PING now. Only called while the
    /// circuits are closed, through the breakers like any call (an open circuit means Redis is
    /// not called at all). `/health` waits at most `within` for the answers; the PINGs
    /// themselves keep the normal deadline (a shorter one would close a connection other calls
    /// are pipelined on) and, when late, finish in the background.
    public func ping(within: Duration = .seconds(1)) async -> Bool {
        guard breakers.worst == .closed else { return false }
        let nodes = nodes
        guard !nodes.isEmpty else { return false }
        return await firstOf({
            await withTaskGroup(of: Bool.self) { group in
                for (node, redis) in nodes {
                    let breaker = self.breakers.breaker(for: node)
                    group.addTask {
                        let reply = await self.attempt(.healthCheck, on: (node, breaker, redis), essential: false) { try await $0.send(.ping) }
                        if case .reply(.simpleString("PONG")) = reply { return true }
                        return false
                    }
                }
                return await group.allSatisfy { $0 }
            }
        }, orAfter: within, fallback: false)
    }

    /// Seconds until an open circuit lets a probe through (at least 1): the `Retry-After` of fail-closed 503s.
    public var retryAfterSeconds: Int {
        state == .open ? max(1, Int(breakers.configuration.recoveryTimeout.components.seconds)) : 1
    }
}

/// Per-request memory of a failed Redis call: which node failed (one Redis: the only one), so a
/// request's later calls to that node fall back at once while calls to a cluster's other
/// masters go on.
final class RequestScope: Sendable {
    private let anyFailed = Atomic<Bool>(false)
    private let failedNodes = Mutex<Set<String>>([])

    func redisFailed(node: String) -> Bool {
        anyFailed.load(ordering: .relaxed) && failedNodes.withLock { $0.contains(node) }
    }

    func markFailed(node: String) {
        failedNodes.withLock { _ = $0.insert(node) }
        anyFailed.store(true, ordering: .relaxed)
    }
}
