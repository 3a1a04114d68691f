public import Logging
public import Resilience
internal import Synchronization

/// The circuit breakers of the Redis the service runs on: one for a single Redis (or the
/// master Sentinel names), one per master on a cluster, so a master that fails makes only
/// its own slots fall back.
///
/// Each breaker logs its own transitions (`node` in the metadata on a cluster) and keeps its
/// `node`-labelled series; the series without `node` is the worst state and every failure.
/// The operator's drill and reset act on every breaker, and a master that appears while the
/// drill is on (a failover) starts forced open too.
public final class RedisBreakers: Sendable {
    public typealias Breaker = CircuitBreaker<ContinuousClock>

    public let configuration: CircuitBreakerConfiguration
    /// false: one breaker, no `node` label.
    public let perNode: Bool
    let metrics: ServiceMetrics
    let logger: Logger
    /// Called with the node on every transition to OPEN (the near cache flushes).
    private let openListeners = Mutex<[@Sendable (String) -> Void]>([])

    private struct State {
        var breakers: [String: Breaker] = [:]
        var drill = false
    }

    private let state = Mutex(State())
    /// The single Redis's breaker (`perNode == false`), also the one reached with no node.
    public static let single = ""

    public init(configuration: CircuitBreakerConfiguration, perNode: Bool, metrics: ServiceMetrics, logger: Logger) {
        self.configuration = configuration
        self.perNode = perNode
        self.metrics = metrics
        self.logger = logger
    }

    public func onOpen(_ listener: @escaping @Sendable (String) -> Void) {
        openListeners.withLock { $0.append(listener) }
    }

    /// The breaker of `node` (made closed, or forced open during the drill, on first use).
    public func breaker(for node: String = RedisBreakers.single) -> Breaker {
        if let breaker = state.withLock({ $0.breakers[node] }) { return breaker }
        let made = Breaker(configuration: configuration, clock: ContinuousClock()) { [weak self] transition in
            self?.transitioned(node: node, transition)
        }
        let (breaker, drill, isNew) = state.withLock { state -> (Breaker, Bool, Bool) in
            if let existing = state.breakers[node] { return (existing, false, false) }
            state.breakers[node] = made
            return (made, state.drill, true)
        }
        if isNew && perNode { metrics.circuitState(0, node: node) }
        if drill { breaker.forceOpen() }
        return breaker
    }

    /// Every breaker, by node.
    public var all: [(node: String, breaker: Breaker)] {
        state.withLock { $0.breakers.map { ($0.key, $0.value) } }.sorted { $0.node < $1.node }
    }

    /// The worst state of all: what `/health` and the node-less series report.
    public var worst: CircuitState {
        all.map(\.breaker.state).max { $0.severity < $1.severity } ?? .closed
    }

    public var isDrill: Bool { state.withLock { $0.drill } }

    /// The open drill: every breaker forced open, and so is any made before `resetAll`.
    public func forceOpenAll() {
        state.withLock { $0.drill = true }
        for (_, breaker) in all { breaker.forceOpen() }
    }

    /// Clears the drill and closes every breaker.
    public func resetAll() {
        state.withLock { $0.drill = false }
        for (_, breaker) in all { breaker.reset() }
    }

    /// After a new cluster map: the breakers of nodes that are no longer masters go.
    public func keep(only nodes: Set<String>) {
        guard perNode else { return }
        let retired = state.withLock { state -> [String] in
            let gone = state.breakers.keys.filter { !nodes.contains($0) }
            for node in gone { state.breakers[node] = nil }
            return gone
        }
        for node in retired {
            metrics.circuitRetired(node: node)
            logger.notice("Redis node is no longer a master; its circuit breaker is retired", metadata: ["service": "redis", "node": "\(node)"])
        }
        if !retired.isEmpty { metrics.circuitState(worst.gaugeValue) }
        for node in nodes { _ = breaker(for: node) }
    }

    private func transitioned(node: String, _ transition: CircuitTransition) {
        if transition.to == .open { for listener in openListeners.withLock({ $0 }) { listener(node) } }
        if perNode { metrics.circuitState(transition.to.gaugeValue, node: node) }
        metrics.circuitState(worst.gaugeValue)
        let line: Logger.Message = switch transition.to {
        case .open: "Circuit breaker OPENED"
        case .halfOpen: "Circuit breaker HALF-OPEN"
        case .closed: "Circuit breaker CLOSED"
        }
        let level: Logger.Level = switch transition.to {
        case .open: .error
        case .halfOpen: .warning
        case .closed: .info
        }
        var metadata: Logger.Metadata = ["service": "redis", "from": "\(transition.from.rawValue)", "reason": "\(transition.reason)"]
        if perNode { metadata["node"] = "\(node)" }
        logger.log(level: level, line, metadata: metadata)
    }

    /// Counts a failure against `node`'s breaker in the metrics (the breaker counts it itself).
    func countFailure(node: String) {
        metrics.circuitFailure()
        if perNode { metrics.circuitFailure(node: node) }
    }
}

extension CircuitState {
    /// closed < half-open < open.
    var severity: Int { gaugeValue }
}
