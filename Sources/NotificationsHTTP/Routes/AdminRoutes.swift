internal import Hummingbird
internal import NotificationsCore
internal import Resilience
internal import Logging

/// Circuit-breaker operations: inspect, reset (clears a forced state and closes), and the
/// open drill (stays open, without probes, until reset).
struct AdminRoutes {
    let gateway: RedisGateway

    func register(on routes: RouteRegistrar<some RouterMethods<AppRequestContext>>) {
        routes.on(.get, "/circuit-breakers", list)
        routes.on(.post, "/circuit-breaker/redis/reset", reset)
        routes.on(.post, "/circuit-breaker/redis/open", open)
    }

    @Sendable func list(_ request: Request, context: AppRequestContext) async throws -> Response {
        let breaker = gateway.breaker
        let configuration = breaker.configuration
        return .json { json in
            json.object { object in
                object.object("redis") { redis in
                    redis.string("state", breaker.state.rawValue)
                    redis.bool("forced", breaker.isForcedOpen)
                    redis.integer("consecutiveFailures", breaker.consecutiveFailures)
                    redis.integer("failureThreshold", configuration.failureThreshold)
                    redis.integer("recoveryTimeoutMs", Int(configuration.recoveryTimeout.components.seconds * 1000
                        + configuration.recoveryTimeout.components.attoseconds / 1_000_000_000_000_000))
                    redis.integer("successThreshold", configuration.successThreshold)
                    redis.bool("failOpen", gateway.failOpen)
                }
            }
        }
    }

    @Sendable func reset(_ request: Request, context: AppRequestContext) async throws -> Response {
        gateway.breaker.reset()
        context.logger.notice("Redis circuit breaker reset by an operator")
        return .json { $0.object { $0.string("state", gateway.breaker.state.rawValue) } }
    }

    @Sendable func open(_ request: Request, context: AppRequestContext) async throws -> Response {
        gateway.breaker.forceOpen()
        context.logger.notice("Redis circuit breaker forced open by an operator")
        return .json { $0.object { $0.string("state", gateway.breaker.state.rawValue) } }
    }
}
