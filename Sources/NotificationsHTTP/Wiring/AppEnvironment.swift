public import Logging
public import MongoStore
public import NIOCore
public import NotificationsCore
internal import Prometheus
public import RedisClient
internal import Resilience
public import ServiceLifecycle

/// Everything the service is made of, built from `Settings` in one place, so the executable
/// and the integration tests wire the same objects the same way.
public struct AppEnvironment: Sendable {
    public let settings: Settings
    public let services: AppServices
    /// The single Redis's (or Sentinel's master's) pool; nil on a cluster.
    public let redisPool: RedisConnectionPool?
    /// With `REDIS_CLUSTER_NODES`: the cluster (run it as a service: it reads and refreshes the slot map).
    public let redisCluster: RedisCluster?
    public let mongoPool: MongoClientPool
    public let store: MongoNotificationStore
    public let gateway: RedisGateway
    public let eventStore: EventStore
    /// The Redis pub/sub connection feeding `services.streams` (run it as a service).
    public let subscriber: any ChannelSubscriber
    /// With Sentinel: the `+switch-master` listener (run it as a service).
    public let sentinelWatcher: RedisSubscriber?

    public static func make(settings: Settings, logger: Logger, eventLoopGroup: any EventLoopGroup) throws -> AppEnvironment {
        let registry = PrometheusCollectorRegistry()
        let metrics = ServiceMetrics(factory: PrometheusMetricsFactory(registry: registry))
        var redisConfiguration = try RedisConfiguration(url: settings.redisURL, operationTimeoutMilliseconds: settings.redisOperationTimeoutMilliseconds)
        let sentinel = settings.redisSentinelMaster.map { master in
            SentinelResolver(
                sentinels: settings.redisSentinels.compactMap { RedisAddress(parsing: $0) }, masterName: master, credentials: redisConfiguration,
                logger: logger)
        }
        let deployment: RedisGateway.Deployment
        var redisPool: RedisConnectionPool?
        var redisCluster: RedisCluster?
        if !settings.redisClusterNodes.isEmpty {
            // A cluster has database 0 only.
            redisConfiguration.database = 0
            let cluster = RedisCluster(
                seeds: settings.redisClusterNodes.compactMap { RedisAddress(parsing: $0) }, configuration: redisConfiguration,
                eventLoopGroup: eventLoopGroup, logger: logger)
            redisCluster = cluster
            deployment = .cluster(cluster)
        } else {
            let pool = RedisConnectionPool(configuration: redisConfiguration, eventLoopGroup: eventLoopGroup, logger: logger, sentinel: sentinel)
            redisPool = pool
            deployment = .single(pool)
        }
        let gateway = RedisGateway(
            deployment: deployment,
            configuration: CircuitBreakerConfiguration(
                failureThreshold: settings.circuitFailureThreshold,
                recoveryTimeout: .milliseconds(settings.circuitRecoveryTimeoutMilliseconds),
                successThreshold: settings.circuitSuccessThreshold),
            failOpen: settings.redisFailOpen, metrics: metrics, logger: logger)
        let mongoPool = try MongoClientPool(
            uriString: settings.mongoURI, operationTimeoutMilliseconds: settings.mongoOperationTimeoutMilliseconds, eventLoopGroup: eventLoopGroup,
            queueCapacity: settings.mongoQueueCapacity)
        // On a cluster, entries are kept per master: each master's own invalidations keep its users' entries exact.
        var nodeOf: (@Sendable (String) -> String)?
        if let redisCluster {
            nodeOf = { key in redisCluster.node(forSlot: HashSlot.of(key))?.name ?? "" }
        }
        let near = settings.feedNearCache
            ? NearCache(
                maxBytes: settings.feedNearCacheMaxBytes, ttl: .seconds(settings.feedCacheTTLSeconds), metrics: metrics, logger: logger, nodeOf: nodeOf)
            : nil
        if let near { gateway.onOpen { node in near.flush(.breaker, node: node) } }
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
        let subscriber: any ChannelSubscriber
        if let redisCluster {
            var masterTracking: (@Sendable (RedisAddress) -> InvalidationTracking)?
            if let near {
                masterTracking = { master in
                    InvalidationTracking(
                        prefixes: [near.trackedPrefix], onInvalidate: { near.invalidate(keys: $0) }, onActive: { near.setActive($0, node: master.description) })
                }
            }
            subscriber = streams.makeClusterSubscriber(cluster: redisCluster, eventLoopGroup: eventLoopGroup, tracking: masterTracking)
        } else {
            var endpoint: RedisSubscriber.Endpoint?
            if let sentinel {
                endpoint = { @Sendable (_: Int, eventLoop: any EventLoop, deadline: NIODeadline) async throws -> RedisAddress in
                    try await sentinel.master(on: eventLoop, deadline: deadline)
                }
            }
            subscriber = streams.makeSubscriber(configuration: redisConfiguration, eventLoopGroup: eventLoopGroup, endpoint: endpoint, tracking: tracking)
        }
        let sentinelWatcher = sentinel.flatMap { sentinel in
            redisPool.map { SentinelWatcher.make(sentinel: sentinel, pool: $0, streams: streams, eventLoopGroup: eventLoopGroup, logger: logger) }
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
            settings: settings, services: services, redisPool: redisPool, redisCluster: redisCluster, mongoPool: mongoPool, store: store, gateway: gateway,
            eventStore: events, subscriber: subscriber, sentinelWatcher: sentinelWatcher)
    }

    /// What keeps the Redis connections (and a cluster's slot map) until shutdown.
    public var redisService: any Service {
        if let redisCluster { return redisCluster }
        return redisPool!
    }

    /// Closes every Redis connection (tests; `serve` stops `redisService`).
    public func closeRedis() {
        redisPool?.close()
        redisCluster?.close()
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
