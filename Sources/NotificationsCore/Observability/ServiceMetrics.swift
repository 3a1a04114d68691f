public import CoreMetrics
internal import Synchronization

/// Every metric the contract names, created at start-up (counters at 0, the state gauge 0)
/// from an injected factory, so parallel tests and instances keep separate registries.
public final class ServiceMetrics: Sendable {
    /// The `operation` label values of `redis_operations_fallback_total`, all exported from start-up.
    public enum Operation: String, Sendable, CaseIterable {
        case rateLimit = "rate_limit"
        case feedCache = "feed_cache"
        case idempotency
        case lock
        case healthCheck = "health_check"
        /// A stream polling MongoDB instead of Redis push, and publishes Redis did not take.
        case stream
        /// A user token's revocation read from MongoDB, or a revocation Redis did not take.
        case tokenRevocation = "token_revocation"
    }

    /// The `queue` label values of `background_writes_pending` and `background_writes_dropped_total`:
    /// MongoDB writes retried in the background (`RetryQueue`).
    public enum BackgroundQueue: String, Sendable, CaseIterable {
        /// Inserts whose outcome was unknown, deleted so the 503 their client got stays true.
        case lateInserts = "late_inserts"
        /// Idempotency claims of failed requests (or of unknown outcome), freed.
        case idempotencyClaims = "idempotency_claims"
        /// Idempotent responses that MongoDB did not take during their request.
        case idempotencyResponses = "idempotency_responses"
        /// Unread counters marked for a recount after a write of unknown outcome.
        case counterRepairs = "counter_repairs"
    }

    /// The `status` label values of `events_total`: events by outcome, and recipients skipped.
    public enum EventOutcome: String, Sendable, CaseIterable {
        case accepted, duplicate
        case inProgress = "in_progress"
        /// Recipients a fan-out skipped (the actor, a muted type, `in_app` off): counted per recipient.
        case suppressed
    }

    /// The `reason` label values of `http_requests_shed_total`: why a request got 503 `overloaded`.
    /// Why the retention remover deleted notifications (`notifications_removed_total{reason}`).
    public enum RemovalReason: String, Sendable, CaseIterable {
        /// Past their own `expiresAt`.
        case expired
        /// Older than `FEED_RETENTION_DAYS`.
        case retention
        /// Beyond the user's newest `FEED_MAX_PER_USER`.
        case cap
    }

    public enum ShedReason: String, Sendable, CaseIterable {
        /// `MAX_IN_FLIGHT` `/v1` requests were already in flight on this instance.
        case inFlight = "in_flight"
        /// The MongoDB work queue of this instance was full.
        case storageQueue = "storage_queue"
        /// `STREAM_MAX_CONNECTIONS` streams were already open on this instance.
        case streams
        /// `STREAM_ACCEPT_PER_SECOND` streams were already accepted in the last second.
        case streamAccept = "stream_accept"
    }

    /// The `purpose` label values of `mongodb_queries_total`: what the queries an operator pays
    /// for are for. The stream purposes are shared queries, one per batch of up to 1000 users.
    public enum QueryPurpose: String, Sendable, CaseIterable {
        /// The shared safety check while streams are on push (every 10 s).
        case streamCheck = "stream_check"
        /// The shared poll while Redis push is unusable (every `STREAM_POLL_INTERVAL_MS`).
        case streamPoll = "stream_poll"
        /// Streams opened with `Last-Event-ID`: what they missed.
        case streamResume = "stream_resume"
        /// Streams opened without one (or reset): what already exists, so it is not sent as new.
        case streamOpen = "stream_open"
        /// A page of a feed that its cache could not answer.
        case feedPage = "feed_page"
        /// A user's counts that their cache could not answer.
        case counts
    }

    private let factory: any MetricsFactory
    private let breakerState: Gauge
    private let breakerFailures: Counter
    private let fallbacks: [Operation: Counter]
    private let rateLimitBypass: Counter
    private let notificationsCreatedCounter: Counter
    private let notificationsRemovedCounters: [RemovalReason: Counter]
    private let backgroundPending: [BackgroundQueue: Gauge]
    private let events: [EventOutcome: Counter]
    private let fanoutDuration: Timer
    private let fanoutsRunning: Gauge
    private let sseConnections: Gauge
    private let sseEvents: [String: Counter]
    private let sseDelivery: Timer
    public static let sseEventNames = ["notification", "unread-count", "counts", "reset", "keep-alive"]
    private let backgroundDropped: [BackgroundQueue: Counter]
    private let shed: [ShedReason: Counter]
    private let queries: [QueryPurpose: Counter]
    private let feedCacheResults: [CacheStatus: Counter]
    private let inFlight: Gauge
    private let nearHits: Counter
    private let nearBytes: Gauge
    private let nearInvalidations: Counter
    private let nearFlushes: [NearCache.FlushReason: Counter]
    private let http = Mutex<[HTTPSeries: (requests: Counter, duration: Timer)]>([:])
    private let breakerNodes = Mutex<[String: (state: Gauge, failures: Counter)]>([:])

    private struct HTTPSeries: Hashable {
        var method: String
        var route: String
        var status: Int
    }

    public init(factory: any MetricsFactory) {
        self.factory = factory
        breakerState = Gauge(label: "redis_circuit_breaker_state", dimensions: [("service", "redis")], factory: factory)
        breakerState.record(0)
        breakerFailures = Counter(label: "redis_circuit_breaker_failures_total", dimensions: [("service", "redis")], factory: factory)
        var fallbacks: [Operation: Counter] = [:]
        for operation in Operation.allCases {
            fallbacks[operation] = Counter(label: "redis_operations_fallback_total", dimensions: [("operation", operation.rawValue)], factory: factory)
        }
        self.fallbacks = fallbacks
        rateLimitBypass = Counter(label: "rate_limit_bypass_total", factory: factory)
        notificationsCreatedCounter = Counter(label: "notifications_created_total", factory: factory)
        notificationsRemovedCounters = Dictionary(uniqueKeysWithValues: RemovalReason.allCases.map { reason in
            (reason, Counter(label: "notifications_removed_total", dimensions: [("reason", reason.rawValue)], factory: factory))
        })
        var pending: [BackgroundQueue: Gauge] = [:]
        var dropped: [BackgroundQueue: Counter] = [:]
        for queue in BackgroundQueue.allCases {
            pending[queue] = Gauge(label: "background_writes_pending", dimensions: [("queue", queue.rawValue)], factory: factory)
            pending[queue]?.record(0)
            dropped[queue] = Counter(label: "background_writes_dropped_total", dimensions: [("queue", queue.rawValue)], factory: factory)
        }
        backgroundPending = pending
        backgroundDropped = dropped
        var events: [EventOutcome: Counter] = [:]
        for outcome in EventOutcome.allCases {
            events[outcome] = Counter(label: "events_total", dimensions: [("status", outcome.rawValue)], factory: factory)
        }
        self.events = events
        fanoutDuration = Timer(label: "event_fanout_seconds", factory: factory)
        fanoutsRunning = Gauge(label: "event_fanouts_in_progress", factory: factory)
        fanoutsRunning.record(0)
        sseConnections = Gauge(label: "sse_connections", factory: factory)
        sseConnections.record(0)
        var sse: [String: Counter] = [:]
        for name in Self.sseEventNames { sse[name] = Counter(label: "sse_events_sent_total", dimensions: [("event", name)], factory: factory) }
        sseEvents = sse
        sseDelivery = Timer(label: "sse_delivery_seconds", factory: factory)
        var shed: [ShedReason: Counter] = [:]
        for reason in ShedReason.allCases {
            shed[reason] = Counter(label: "http_requests_shed_total", dimensions: [("reason", reason.rawValue)], factory: factory)
        }
        self.shed = shed
        queries = Dictionary(uniqueKeysWithValues: QueryPurpose.allCases.map { purpose in
            (purpose, Counter(label: "mongodb_queries_total", dimensions: [("purpose", purpose.rawValue)], factory: factory))
        })
        var cacheResults: [CacheStatus: Counter] = [:]
        for result in CacheStatus.allCases {
            cacheResults[result] = Counter(label: "feed_cache_requests_total", dimensions: [("result", result.rawValue)], factory: factory)
        }
        feedCacheResults = cacheResults
        inFlight = Gauge(label: "http_requests_in_flight", factory: factory)
        inFlight.record(0)
        nearHits = Counter(label: "feed_near_cache_hits_total", factory: factory)
        nearBytes = Gauge(label: "feed_near_cache_bytes", factory: factory)
        nearBytes.record(0)
        nearInvalidations = Counter(label: "feed_near_cache_invalidations_total", factory: factory)
        var flushes: [NearCache.FlushReason: Counter] = [:]
        for reason in NearCache.FlushReason.allCases {
            flushes[reason] = Counter(label: "feed_near_cache_flushes_total", dimensions: [("reason", reason.rawValue)], factory: factory)
        }
        nearFlushes = flushes
        // The HTTP families exist from start-up too: their first series is the metrics scrape itself.
        _ = httpSeries(method: "GET", route: "/metrics", status: 200)
    }

    public func circuitState(_ value: Int) { breakerState.record(value) }
    public func circuitFailure() { breakerFailures.increment() }

    /// One cluster master's breaker: `{service="redis",node="host:port"}` beside the whole's series.
    public func circuitState(_ value: Int, node: String) { nodeSeries(node).state.record(value) }
    public func circuitFailure(node: String) { nodeSeries(node).failures.increment() }

    /// A node that is no longer a master: its series go (a breaker that serves no slot is no state to alert on).
    public func circuitRetired(node: String) {
        guard let series = breakerNodes.withLock({ $0.removeValue(forKey: node) }) else { return }
        series.state.destroy()
        series.failures.destroy()
    }

    private func nodeSeries(_ node: String) -> (state: Gauge, failures: Counter) {
        breakerNodes.withLock { nodes in
            if let series = nodes[node] { return series }
            let dimensions = [("service", "redis"), ("node", node)]
            let series = (
                state: Gauge(label: "redis_circuit_breaker_state", dimensions: dimensions, factory: factory),
                failures: Counter(label: "redis_circuit_breaker_failures_total", dimensions: dimensions, factory: factory))
            series.state.record(0)
            nodes[node] = series
            return series
        }
    }
    public func fallback(_ operation: Operation) { fallbacks[operation]?.increment() }
    public func rateLimitBypassed() { rateLimitBypass.increment() }
    public func notificationsCreated(_ count: Int) { notificationsCreatedCounter.increment(by: count) }
    public func notificationsRemoved(_ count: Int, reason: RemovalReason) { if count > 0 { notificationsRemovedCounters[reason]?.increment(by: count) } }
    public func event(_ outcome: EventOutcome) { events[outcome]?.increment() }
    public func eventRecipientsSuppressed(_ count: Int) { if count > 0 { events[.suppressed]?.increment(by: count) } }
    public func eventFanout(_ duration: Duration) { fanoutDuration.recordNanoseconds(duration.nanoseconds) }
    public func fanoutsInProgress(_ count: Int) { fanoutsRunning.record(count) }
    public func streamsOpen(_ count: Int) { sseConnections.record(count) }
    public func streamEventSent(_ name: String) { sseEvents[name]?.increment() }
    public func streamDelivered(after duration: Duration) { sseDelivery.recordNanoseconds(max(0, duration.nanoseconds)) }
    public func backgroundWritesPending(_ queue: BackgroundQueue, _ size: Int) { backgroundPending[queue]?.record(size) }
    public func backgroundWriteDropped(_ queue: BackgroundQueue, count: Int = 1) { backgroundDropped[queue]?.increment(by: count) }

    public func requestShed(_ reason: ShedReason) { shed[reason]?.increment() }
    public func mongoQuery(_ purpose: QueryPurpose, count: Int = 1) { queries[purpose]?.increment(by: count) }
    /// A cacheable read answered, by how the feed cache served it (`X-Cache`).
    public func feedCache(_ result: CacheStatus) { feedCacheResults[result]?.increment() }
    public func requestsInFlight(_ count: Int) { inFlight.record(count) }
    /// Reads the near cache answered (`X-Cache-Tier: local`); also counted as hits in `feed_cache_requests_total`.
    public func nearCacheHit() { nearHits.increment() }
    public func nearCacheBytes(_ bytes: Int) { nearBytes.record(bytes) }
    /// Users whose near-cache entries a Redis invalidation dropped.
    public func nearCacheInvalidations(_ users: Int) { nearInvalidations.increment(by: users) }
    public func nearCacheFlushed(_ reason: NearCache.FlushReason) { nearFlushes[reason]?.increment() }

    /// `http_requests_total{method,route,status}` and `http_request_duration_seconds{method,route}`.
    /// `route` must be a template or a fixed placeholder, never a raw path (bounded labels).
    public func httpRequest(method: String, route: String, status: Int, duration: Duration) {
        let series = httpSeries(method: method, route: route, status: status)
        series.requests.increment()
        series.duration.recordNanoseconds(duration.nanoseconds)
    }

    private func httpSeries(method: String, route: String, status: Int) -> (requests: Counter, duration: Timer) {
        let key = HTTPSeries(method: method, route: route, status: status)
        return http.withLock { cache in
            if let series = cache[key] { return series }
            let series = (
                requests: Counter(label: "http_requests_total", dimensions: [("method", method), ("route", route), ("status", String(status))], factory: factory),
                duration: Timer(label: "http_request_duration_seconds", dimensions: [("method", method), ("route", route)], factory: factory)
            )
            cache[key] = series
            return series
        }
    }
}
