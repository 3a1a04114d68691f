internal import Logging
public import ServiceLifecycle

/// Moves an open circuit back to closed without waiting for traffic: once the recovery
/// timeout has passed (the circuit reads half-open), it sends PING probes through the
/// breaker, so `HALF-OPEN` then `CLOSED` happen by themselves when Redis is back (each
/// cluster master's breaker on its own).
public struct RedisRecoveryProbe: Service {
    let gateway: RedisGateway
    let interval: Duration

    public init(gateway: RedisGateway, interval: Duration = .milliseconds(500)) {
        self.gateway = gateway
        self.interval = interval
    }

    public func run() async throws {
        await repeatUntilShutdown(every: interval) {
            await gateway.probeHalfOpen()
        }
    }
}
