internal import Hummingbird
internal import NotificationsCore
internal import Resilience

/// `/health`, `/health/live`, `/health/ready`: no auth, never rate limited.
struct HealthRoutes {
    let health: HealthMonitor

    func register(on routes: RouteRegistrar<some RouterMethods<AppRequestContext>>) {
        routes.on(.get, "/health", overall)
        routes.on(.get, "/health/live", live)
        routes.on(.get, "/health/ready", ready)
    }

    @Sendable func overall(_ request: Request, context: AppRequestContext) async throws -> Response {
        let report = await health.report()
        return .json(report.mongoUp ? .ok : .serviceUnavailable) { json in
            json.object { object in
                object.string("status", report.status)
                object.object("components") { components in
                    components.object("mongodb") { $0.string("status", report.mongoUp ? "up" : "down") }
                    components.object("redis") { redis in
                        redis.string("status", report.redisUp && report.circuit == .closed ? "up" : "down")
                        redis.string("circuit", report.circuit.rawValue)
                    }
                }
            }
        }
    }

    @Sendable func live(_ request: Request, context: AppRequestContext) async throws -> Response {
        .json { $0.object { $0.string("status", "alive") } }
    }

    @Sendable func ready(_ request: Request, context: AppRequestContext) async throws -> Response {
        let (ready, reason) = await health.ready()
        return .json(ready ? .ok : .serviceUnavailable) { json in
            json.object { object in
                object.string("status", ready ? "ready" : "not_ready")
                if let reason { object.string("reason", reason) }
            }
        }
    }
}
