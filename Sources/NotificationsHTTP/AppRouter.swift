public import Hummingbird
public import NotificationsCore
public import Prometheus
public import Resilience

/// What the HTTP layer needs from the rest of the service.
public struct AppServices: Sendable {
    public var settings: Settings
    /// User tokens (`USER_TOKEN_KEYS`) and their revocations.
    public var tokens: UserTokens
    public var revocations: TokenRevocations
    public var feed: NotificationFeed
    /// `seen-all`, `read-all`, `archive-all`, in the background past `BULK_SYNC_LIMIT`.
    public var bulk: AllAtOnceOperations
    public var health: HealthMonitor
    public var redis: RedisGateway
    public var limiter: RateLimiter
    public var idempotency: IdempotencyStore
    public var events: EventService
    public var followers: FollowerStore
    public var preferences: PreferenceService
    public var cache: FeedCache
    public var streams: StreamHub
    /// The streams' MongoDB queries, shared by the streams that open together.
    public var streamQueries: StreamQueries
    public var store: any NotificationStore
    public var metrics: ServiceMetrics
    public var registry: PrometheusCollectorRegistry
    /// `MAX_IN_FLIGHT`: the `/v1` requests this instance runs at once.
    public var inFlight: Bulkhead

    public init(
        settings: Settings, tokens: UserTokens, revocations: TokenRevocations, feed: NotificationFeed, bulk: AllAtOnceOperations, health: HealthMonitor, redis: RedisGateway, limiter: RateLimiter,
        idempotency: IdempotencyStore, events: EventService, followers: FollowerStore, preferences: PreferenceService, cache: FeedCache,
        streams: StreamHub, streamQueries: StreamQueries, store: any NotificationStore, metrics: ServiceMetrics, registry: PrometheusCollectorRegistry,
        inFlight: Bulkhead
    ) {
        self.inFlight = inFlight
        self.tokens = tokens
        self.revocations = revocations
        self.idempotency = idempotency
        self.events = events
        self.followers = followers
        self.preferences = preferences
        self.cache = cache
        self.streams = streams
        self.streamQueries = streamQueries
        self.store = store
        self.settings = settings
        self.feed = feed
        self.bulk = bulk
        self.health = health
        self.redis = redis
        self.limiter = limiter
        self.metrics = metrics
        self.registry = registry
    }
}

/// Builds the router. Middleware, outermost first: request log → metrics → CORS → problem+json →
/// Redis scope; then per group: `/v1` load shedding → auth → rate limit → access (what a user
/// token may call) → idempotency, `/admin` admin auth. Health and metrics have neither auth nor rate limits, and are never shed. Every GET
/// route answers HEAD too: Hummingbird runs the GET handler, SwiftNIO's encoder sends no body.
public func buildRouter(_ services: AppServices) -> Router<AppRequestContext> {
    let router = Router(context: AppRequestContext.self, options: .autoGenerateHeadEndpoints)
    let table = RouteTable()
    // Each stack is built with Hummingbird's result builder: one concrete, specialised type
    // instead of one `any MiddlewareProtocol` call per middleware (its gain is within the
    // bench's noise, see docs/PERFORMANCE.md, and it costs nothing).
    router.addMiddleware {
        RequestLogMiddleware()
        MetricsMiddleware(metrics: services.metrics)
        CORSMiddleware(origins: services.settings.corsAllowedOrigins)
        ProblemMiddleware(routes: table, metrics: services.metrics)
        RedisScopeMiddleware()
    }
    let root = RouteRegistrar(methods: router, table: table, prefix: "")
    HealthRoutes(health: services.health).register(on: root)
    MetricsRoute(registry: services.registry).register(on: root)
    OpenAPIRoute().register(on: root)
    if services.settings.demoUI { DemoRoutes(tokens: services.tokens, clock: SystemWallClock()).register(on: root) }

    let admin = router.group("admin").add(middleware: AdminAuthMiddleware(token: services.settings.adminToken))
    AdminRoutes(gateway: services.redis).register(on: RouteRegistrar(methods: admin, table: table, prefix: "/admin"))

    let v1 = router.group("v1").addMiddleware {
        LoadSheddingMiddleware(slots: services.inFlight, metrics: services.metrics)
        AuthMiddleware(keys: services.settings.apiKeys, tokens: services.tokens, revocations: services.revocations, routes: table)
        RateLimitMiddleware(limiter: services.limiter, metrics: services.metrics, routes: table)
        AccessMiddleware(routes: table)
        IdempotencyMiddleware(store: services.idempotency, metrics: services.metrics)
    }
    let v1Routes = RouteRegistrar(methods: v1, table: table, prefix: "/v1")
    NotificationRoutes(feed: services.feed, bulk: services.bulk).register(on: v1Routes)
    StreamRoutes(
        queries: services.streamQueries, hub: services.streams, metrics: services.metrics
    ).register(on: v1Routes)
    TokenRoutes(tokens: services.tokens, revocations: services.revocations, clock: SystemWallClock()).register(on: v1Routes)
    EventRoutes(events: services.events).register(on: v1Routes)
    UserRoutes(followers: services.followers, preferences: services.preferences, cache: services.cache, clock: SystemWallClock())
        .register(on: v1Routes)
    return router
}
