public import Hummingbird
public import NotificationsCore

/// What the HTTP layer needs from the rest of the service.
public struct AppServices: Sendable {
    public var settings: Settings
    public var feed: NotificationFeed
    public var health: HealthMonitor

    public init(settings: Settings, feed: NotificationFeed, health: HealthMonitor) {
        self.settings = settings
        self.feed = feed
        self.health = health
    }
}

/// Builds the router: middleware outermost first (request log → problem+json → auth on /v1), then the routes.
public func buildRouter(_ services: AppServices) -> Router<AppRequestContext> {
    let router = Router(context: AppRequestContext.self)
    let table = RouteTable()
    router.add(middleware: RequestLogMiddleware())
    router.add(middleware: ProblemMiddleware(routes: table))
    HealthRoutes(health: services.health).register(on: RouteRegistrar(methods: router, table: table, prefix: ""))

    let v1 = router.group("v1").add(middleware: AuthMiddleware(keys: services.settings.apiKeys))
    NotificationRoutes(feed: services.feed).register(on: RouteRegistrar(methods: v1, table: table, prefix: "/v1"))
    return router
}
