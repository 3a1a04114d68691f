public import Logging
public import MongoStore
public import NIOCore
public import NotificationsCore
internal import Prometheus
public import RedisClient
internal import Resilience

/// Everything the service is made of, built from `Settings` in one place, so the executable
/// and the integration tests wire the same objects the same way.
public struct AppEnvironment: Sendable {
    public let settings: Settings
    public let services: AppServices
    public let redisPool: RedisConnectionPool
    public let mongoPool: MongoClientPool
    public let store: MongoNotificationStore
    public let gateway: RedisGateway
    public let eventStore: EventStore
    /// The Redis pub/sub connection feeding `services.streams` (run it as a service).
    public let subscriber: RedisSubscriber
    /// With Sentinel: the `+switch-master` listener (run it as a service).
    public let sentinelWatcher: RedisSubscriber?

    public static func make(settings: Settings, logger: Logger, eventLoopGroup: any EventLoopGroup) throws -> AppEnvironment {
        let registry = PrometheusCollectorRegistry()
        let metrics = ServiceMetrics(factory: PrometheusMetricsFactory(registry: registry))
        let redisConfiguration = try RedisConfiguration(url: settings.redisURL, operationTimeoutMilliseconds: settings.redisOperationTimeoutMilliseconds)
        let sentinel = settings.redisSentinelMaster.map { master in
            SentinelResolver(
                sentinels: settings.redisSentinels.compactMap { RedisAddress(parsing: $0) }, masterName: master, credentials: redisConfiguration,
                logger: logger)
        }
        let redisPool = RedisConnectionPool(configuration: redisConfiguration, eventLoopGroup: eventLoopGroup, logger: logger, sentinel: sentinel)
        let gateway = RedisGateway(
            pool: redisPool,
            configuration: CircuitBreakerConfiguration(
                failureThreshold: settings.circuitFailureThreshold,
                recoveryTimeout: .milliseconds(settings.circuitRecoveryTimeoutMilliseconds),
                successThreshold: settings.circuitSuccessThreshold),
            failOpen: settings.redisFailOpen, metrics: metrics, logger: logger)
        let mongoPool = try MongoClientPool(
            uriString: settings.mongoURI, operationTimeoutMilliseconds: settings.mongoOperationTimeoutMilliseconds, eventLoopGroup: eventLoopGroup,
            queueCapacity: settings.mongoQueueCapacity)
        let near = settings.feedNearCache
            ? NearCache(maxBytes: settings.feedNearCacheMaxBytes, ttl: .seconds(settings.feedCacheTTLSeconds), metrics: metrics, logger: logger)
            : nil
        if let near { gateway.onOpen { near.flush(.breaker) } }
        let cache = FeedCache(gateway: gateway, ttlSeconds: settings.feedCacheTTLSeconds, logger: logger, near: near)
        // A counter marked for a recount in the background also drops the users' cached feeds.
        let store = MongoNotificationStore(pool: mongoPool, metrics: metrics, logger: logger) { users in
            if users.count == 1 { await cache.invalidate(user: users[0]) } else { await cache.invalidateMany(users: users) }
        }
        // Preferences have versions of their own: a create for a user does not drop them.
        let preferences = PreferenceService(
            store: PreferenceStore(pool: mongoPool),
            cache: FeedCache(gateway: gateway, ttlSeconds: settings.feedCacheTTLSeconds, logger: logger, namespace: "prefs"))
        let followers = FollowerStore(pool: mongoPool)
        let events = EventStore(pool: mongoPool)
        let publisher = StreamPublisher(gateway: gateway)
        let streams = StreamHub(
            gateway: gateway, maxConnections: settings.streamMaxConnections, acceptPerSecond: settings.streamAcceptPerSecond,
            heartbeat: .seconds(settings.streamHeartbeatSeconds), retryMax: .milliseconds(settings.streamRetryMaxMilliseconds),
            metrics: metrics, logger: logger)
        // The near cache's invalidations ride on the streams' subscriber connection.
        let tracking = near.map { near in
            InvalidationTracking(prefixes: [near.trackedPrefix], onInvalidate: { near.invalidate(keys: $0) }, onActive: { near.setActive($0) })
        }
        let subscriber = streams.makeSubscriber(configuration: redisConfiguration, eventLoopGroup: eventLoopGroup, sentinel: sentinel, tracking: tracking)
        let sentinelWatcher = sentinel.map { sentinel in
            SentinelWatcher.make(sentinel: sentinel, pool: redisPool, streams: streams, eventLoopGroup: eventLoopGroup, logger: logger)
        }
        // Single creates and event fan-out batches share one group commit.
        let writer = NotificationWriter(store: store, cache: cache, streams: publisher, metrics: metrics)
        let healthPingTimeout = TimeAmount.milliseconds(min(settings.mongoOperationTimeoutMilliseconds, 2000))
        let health = HealthMonitor(mongoPing: { await mongoPool.ping(timeout: healthPingTimeout) }, redis: gateway)
        let locks = LockManager(
            gateway: gateway, ttl: .milliseconds(settings.lockTTLMilliseconds), wait: .milliseconds(settings.lockWaitMilliseconds), logger: logger)
        let bulk = AllAtOnceOperations(
            store: store, operations: BulkOperationStore(pool: mongoPool), runner: BackgroundRunner(kind: "bulk operation", logger: logger),
            locks: locks, cache: cache, streams: publisher, settings: settings, logger: logger)
        let feed = NotificationFeed(store: store, writer: writer, cache: cache, preferences: preferences, streams: publisher)
        let revocations = TokenRevocations(pool: mongoPool, gateway: gateway, hub: streams, metrics: metrics, logger: logger)
        let services = AppServices(
            settings: settings, tokens: UserTokens(keys: settings.userTokenKeys), revocations: revocations,
            feed: feed,
            bulk: bulk,
            health: health, redis: gateway,
            limiter: RateLimiter(policies: settings.allRateLimitPolicies, gateway: gateway, metrics: metrics, logger: logger),
            idempotency: IdempotencyStore(
                pool: mongoPool, gateway: gateway, ttlSeconds: settings.idempotencyTTLSeconds,
                claimLease: .milliseconds(settings.idempotencyClaimLeaseMilliseconds), metrics: metrics, logger: logger),
            events: EventService(
                events: events, followers: followers, preferences: preferences, writer: writer,
                runner: BackgroundRunner(kind: "fan-out", logger: logger, inProgress: metrics.fanoutsInProgress), settings: settings, metrics: metrics, logger: logger),
            followers: followers, preferences: preferences, cache: cache, streams: streams,
            streamQueries: StreamQueries(
                store: store, feed: feed, metrics: metrics, pollInterval: .milliseconds(settings.streamPollIntervalMilliseconds)),
            store: store,
            metrics: metrics, registry: registry, inFlight: Bulkhead(capacity: settings.maxInFlight))
        return AppEnvironment(
            settings: settings, services: services, redisPool: redisPool, mongoPool: mongoPool, store: store, gateway: gateway,
            eventStore: events, subscriber: subscriber, sentinelWatcher: sentinelWatcher)
    }

    /// The retention remover of this instance (`FEED_RETENTION_DAYS`, `FEED_MAX_PER_USER`, `expiresAt`).
    public func retentionSweeper() -> RetentionSweeper {
        RetentionSweeper(
            store: store, feed: services.feed, metrics: services.metrics, interval: settings.retentionInterval,
            retentionDays: settings.feedRetentionDays, maxPerUser: settings.feedMaxPerUser)
    }

    /// The heartbeats and the shared check of this instance's open streams.
    public func streamWatcher() -> StreamWatcher {
        StreamWatcher(
            hub: services.streams, queries: services.streamQueries, store: store, revocations: services.revocations,
            pollInterval: .milliseconds(settings.streamPollIntervalMilliseconds))
    }

    /// Every MongoDB index the service relies on (idempotent).
    public func createIndexes() async throws {
        try await store.createIndexes()
        try await services.idempotency.createIndexes()
        try await services.followers.createIndexes()
        try await eventStore.createIndexes()
        try await services.bulk.createIndexes()
    }
}
