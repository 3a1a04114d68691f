public import Resilience
internal import Synchronization

/// What `/health` and `/health/ready` report: MongoDB is required, Redis only degrades.
public final class HealthMonitor: Sendable {
    public struct Report: Sendable {
        public var mongoUp: Bool
        public var redisUp: Bool
        public var circuit: CircuitState

        /// `healthy`; `degraded` when the Redis circuit is not closed or Redis does not answer
        /// (the service still works); `unhealthy` when MongoDB is down.
        public var status: String {
            !mongoUp ? "unhealthy" : (redisUp && circuit == .closed ? "healthy" : "degraded")
        }
    }

    private let mongoPing: @Sendable () async -> Bool
    private let redis: RedisGateway
    private let draining = Atomic<Bool>(false)

    public init(mongoPing: @escaping @Sendable () async -> Bool, redis: RedisGateway) {
        self.mongoPing = mongoPing
        self.redis = redis
    }

    public func report() async -> Report {
        async let mongo = mongoPing()
        // The gateway pings only through a closed circuit: an open one means Redis is not called.
        async let redisAnswers = redis.ping()
        let circuit = redis.state
        return Report(mongoUp: await mongo, redisUp: await redisAnswers, circuit: circuit)
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
