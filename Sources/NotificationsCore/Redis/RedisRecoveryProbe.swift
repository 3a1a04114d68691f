internal import Logging
public import ServiceLifecycle
internal import RedisClient
internal import Resilience

/// Moves an open circuit back to closed without waiting for traffic: once the recovery
/// timeout has passed (the circuit reads half-open), it sends PING probes through the
/// breaker, so `HALF-OPEN` then `CLOSED` happen by themselves when Redis is back.
public struct RedisRecoveryProbe: Service {
    let gateway: RedisGateway
    let interval: Duration

    public init(gateway: RedisGateway, interval: Duration = .milliseconds(500)) {
        self.gateway = gateway
        self.interval = interval
    }

    public func run() async throws {
        await repeatUntilShutdown(every: interval) {
            if gateway.state == .halfOpen && !gateway.breaker.isForcedOpen {
                _ = await gateway.call(.healthCheck) { pool in try await pool.send(.ping) }
            }
        }
    }
}
