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
        let breakers = gateway.breakers
        let configuration = breakers.configuration
        let all = breakers.all
        return .json { json in
            json.object { object in
                object.object("redis") { redis in
                    // On a cluster: the worst master's state, and each master's under `nodes`.
                    redis.string("state", breakers.worst.rawValue)
                    redis.bool("forced", breakers.isDrill || all.contains { $0.breaker.isForcedOpen })
                    redis.integer("consecutiveFailures", all.map(\.breaker.consecutiveFailures).max() ?? 0)
                    redis.integer("failureThreshold", configuration.failureThreshold)
                    redis.integer("recoveryTimeoutMs", Int(configuration.recoveryTimeout.components.seconds * 1000
                        + configuration.recoveryTimeout.components.attoseconds / 1_000_000_000_000_000))
                    redis.integer("successThreshold", configuration.successThreshold)
                    redis.bool("failOpen", gateway.failOpen)
                    if breakers.perNode {
                        redis.object("nodes") { nodes in
                            for (node, breaker) in all {
                                nodes.object(node) { entry in
                                    entry.string("state", breaker.state.rawValue)
                                    entry.bool("forced", breaker.isForcedOpen)
                                    entry.integer("consecutiveFailures", breaker.consecutiveFailures)
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    @Sendable func reset(_ request: Request, context: AppRequestContext) async throws -> Response {
        gateway.breakers.resetAll()
        context.logger.notice("Redis circuit breaker reset by an operator")
        return .json { $0.object { $0.string("state", gateway.breakers.worst.rawValue) } }
    }

    @Sendable func open(_ request: Request, context: AppRequestContext) async throws -> Response {
        gateway.breakers.forceOpenAll()
        context.logger.notice("Redis circuit breaker forced open by an operator")
        return .json { $0.object { $0.string("state", gateway.breakers.worst.rawValue) } }
    }
}
