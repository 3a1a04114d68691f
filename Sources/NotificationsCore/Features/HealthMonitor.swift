internal import Synchronization

/// What `/health` and `/health/ready` report: MongoDB is required, Redis only degrades.
public final class HealthMonitor: Sendable {
    public struct Report: Sendable {
        public var mongoUp: Bool
        public var redisUp: Bool

        /// `healthy`, `degraded` (Redis down: the service still works), or `unhealthy` (MongoDB down).
        public var status: String {
            !mongoUp ? "unhealthy" : (redisUp ? "healthy" : "degraded")
        }
    }

    private let mongoPing: @Sendable () async -> Bool
    private let redisPing: @Sendable () async -> Bool
    private let draining = Atomic<Bool>(false)

    public init(mongoPing: @escaping @Sendable () async -> Bool, redisPing: @escaping @Sendable () async -> Bool) {
        self.mongoPing = mongoPing
        self.redisPing = redisPing
    }

    public func report() async -> Report {
        async let mongo = mongoPing()
        async let redis = redisPing()
        return Report(mongoUp: await mongo, redisUp: await redis)
    }

    /// Ready means: not draining, and MongoDB answers.
    public func ready() async -> (ready: Bool, reason: String?) {
        if isDraining { return (false, "draining") }
        return await mongoPing() ? (true, nil) : (false, "mongodb_unavailable")
    }

    /// Set on SIGTERM: readiness turns 503 while in-flight requests finish.
    public func startDraining() {
        draining.store(true, ordering: .relaxed)
    }

    public var isDraining: Bool { draining.load(ordering: .relaxed) }
}
