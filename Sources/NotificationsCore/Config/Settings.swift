internal import Configuration
public import Logging

/// Every knob of the service, with its env name and default in one place.
///
/// Values come from the environment, then from `CONFIG_FILE` (a JSON object with the same
/// names as keys), through swift-configuration; the environment wins. A bad value stops
/// start-up with one line that names the variable (`SettingsError.description`).
public struct Settings: Sendable {
    public var host = "0.0.0.0"
    public var port = 8080
    public var redisURL = "redis://localhost:6379"
    /// `REDIS_SENTINELS` (`host:port,...`) with `REDIS_SENTINEL_MASTER`: find the master through Sentinel.
    public var redisSentinels: [String] = []
    public var redisSentinelMaster: String?
    /// `REDIS_CLUSTER_NODES` (`host:port,...`, seeds): run on a Redis Cluster.
    public var redisClusterNodes: [String] = []
    public var mongoURI = "mongodb://localhost:27017/notifications"
    public var redisFailOpen = true
    public var circuitFailureThreshold = 5
    public var circuitRecoveryTimeoutMilliseconds: Int64 = 30000
    public var circuitSuccessThreshold = 2
    public var redisOperationTimeoutMilliseconds: Int64 = 5000
    public var idempotencyTTLSeconds: Int64 = 86400
    /// How long an idempotency claim in progress is its holder's before another request may
    /// take it over (its holder died). Not an environment variable: the retention must exceed it.
    public var idempotencyClaimLeaseMilliseconds: Int64 = 60_000
    public var apiKeys: [APIKey] = []
    public var adminToken: String?
    /// `USER_TOKEN_KEYS`: the keys user tokens are signed with (the first) and verified with
    /// (all); none: user tokens are off.
    public var userTokenKeys: [UserTokenKey] = []
    /// `CORS_ALLOWED_ORIGINS`: exact origins; none: no CORS headers at all.
    public var corsAllowedOrigins: [String] = []
    /// `DEMO_UI`: serves the inbox demo page at `/demo/` (to loopback clients only).
    public var demoUI = false
    public var rateLimitPolicies: [RateLimitPolicy] = [RateLimitPolicy(name: "*", limit: 100, windowMilliseconds: 1000)]
    /// From the config file's `routeGroupPolicies`: `{"read": "*:200/1s", "write": "*:20/1s"}`.
    public var routeGroupPolicies: [RouteGroup: [RateLimitPolicy]] = [:]
    public var eventRetentionSeconds: Int64 = 604_800
    /// Followers above which an event answers `in_progress` and fans out in the background.
    public var eventSyncFanoutLimit = 10_000
    /// A fan-out whose owner renewed nothing for this long is resumed by another instance.
    public var eventFanoutLeaseMilliseconds: Int64 = 30_000
    public var feedCacheTTLSeconds: Int64 = 30
    /// Notifications older than this many days are removed; 0 keeps them for ever.
    public var feedRetentionDays = 90
    /// A user's notifications beyond their newest this many are removed; 0: no cap.
    public var feedMaxPerUser = 10_000
    /// How often each instance tries to take the retention remover's lease and run a pass.
    /// Not an environment variable (the contract's bound is 60 s); tests shorten it.
    public var retentionInterval: Duration = .seconds(15)
    /// Notifications an all-at-once operation changes within the request; beyond, it goes on
    /// in the background.
    public var bulkSyncLimit = 10_000
    /// Hot feed pages and counts also kept in process, exact through Redis invalidations; off
    /// by default because another instance's write reaches it only after the invalidation's delivery.
    public var feedNearCache = false
    public var feedNearCacheMaxBytes = 64 << 20
    public var streamHeartbeatSeconds: Int64 = 15
    public var streamPollIntervalMilliseconds: Int64 = 2000
    public var streamMaxConnections = 10_000
    /// The largest `retry:` a stream ends with (spread at random from 1000 up to it).
    public var streamRetryMaxMilliseconds: Int64 = 10_000
    /// New streams this instance accepts per second (a reconnection storm is let in at this pace).
    public var streamAcceptPerSecond = 500
    public var lockTTLMilliseconds: Int64 = 10000
    public var lockWaitMilliseconds: Int64 = 2000
    public var mongoOperationTimeoutMilliseconds: Int64 = 5000
    public var shutdownGraceSeconds: Int64 = 10
    /// `/v1` requests in flight per instance beyond which new ones are shed (503 `overloaded`).
    public var maxInFlight = 512
    /// MongoDB calls queued or running per instance beyond which new ones are refused (503
    /// `overloaded`); nil: 16 per client-pool thread, at least 256. Not an environment variable.
    public var mongoQueueCapacity: Int?
    public var logLevel: Logger.Level = .info
    public var logFormat: LogFormat = .text
    public var configFile: String?

    public init() {}

    public var allRateLimitPolicies: RateLimitPolicies {
        RateLimitPolicies(global: rateLimitPolicies, byGroup: routeGroupPolicies)
    }

    /// Every variable this service reads, in the order the README lists them.
    public static var variableNames: [String] { variables.map(\.name) }

    /// Variables whose values are secrets: marked as such for swift-configuration (its access
    /// log redacts them) and masked by `check-config`.
    public static let secretNames: Set<String> = ["API_KEYS", "ADMIN_TOKEN", "USER_TOKEN_KEYS", "REDIS_URL", "MONGODB_URI"]

    /// Builds settings from an environment and the config file it may name, read through
    /// swift-configuration: the environment provider first (it wins), then the file's.
    /// An empty (or blank) variable counts as unset, so `ADMIN_TOKEN=` in a compose file means "none".
    /// - Parameter readFile: returns a file's bytes, or throws if it cannot be read.
    public static func load(environment: [String: String], readFile: (String) throws -> [UInt8]) async throws(SettingsError) -> Settings {
        try await loadWithSources(environment: environment, readFile: readFile).settings
    }

    /// `load`, and the source of every variable (`environment`, the config file's path, or `default`).
    public static func loadWithSources(
        environment: [String: String], readFile: (String) throws -> [UInt8]
    ) async throws(SettingsError) -> (settings: Settings, sources: [String: String]) {
        let setVariables = environment.filter { !$0.value.trimmingSpaces.isEmpty }
        var providers: [any ConfigProvider] = [
            EnvironmentVariablesProvider(environmentVariables: setVariables, secretsSpecifier: .specific(secretNames))
        ]
        let configFile = setVariables["CONFIG_FILE"]
        if let configFile {
            providers.append(try await ConfigFile.provider(path: configFile, readFile: readFile))
        }
        let recorder = ConfigSources()
        let lookup = ConfigLookup(reader: ConfigReader(providers: providers, accessReporter: recorder), recorder: recorder)
        var values: [String: String] = [:]
        var sources: [String: String] = [:]
        for name in variableNames + RouteGroup.allCases.map({ "\(ConfigFile.routeGroupPoliciesKey).\($0.rawValue)" }) {
            guard let (value, provider) = try lookup.value(name, isSecret: secretNames.contains(name)) else {
                sources[name] = "default"
                continue
            }
            values[name] = value
            sources[name] = provider == "EnvironmentVariablesProvider" ? "environment" : configFile ?? provider
        }
        return (try Settings(values: values), sources)
    }

    init(values: [String: String]) throws(SettingsError) {
        let reader = SettingsReader(values: values)
        host = try reader.string("HOST", default: host)
        port = try reader.integer("PORT", default: port, in: 1...65535)
        redisURL = try reader.redisURL("REDIS_URL", default: redisURL)
        redisSentinels = try reader.addressList("REDIS_SENTINELS")
        redisSentinelMaster = try reader.optionalSecret("REDIS_SENTINEL_MASTER")
        if redisSentinels.isEmpty != (redisSentinelMaster == nil) {
            throw SettingsError(
                variable: redisSentinels.isEmpty ? "REDIS_SENTINELS" : "REDIS_SENTINEL_MASTER",
                reason: "REDIS_SENTINELS and REDIS_SENTINEL_MASTER go together")
        }
        redisClusterNodes = try reader.addressList("REDIS_CLUSTER_NODES")
        if !redisClusterNodes.isEmpty && !redisSentinels.isEmpty {
            throw SettingsError(variable: "REDIS_CLUSTER_NODES", reason: "a Redis Cluster has no sentinels: set REDIS_CLUSTER_NODES or REDIS_SENTINELS, not both")
        }
        mongoURI = try reader.mongoURI("MONGODB_URI", default: mongoURI)
        redisFailOpen = try reader.bool("REDIS_FAIL_OPEN", default: redisFailOpen)
        circuitFailureThreshold = try reader.integer("REDIS_CIRCUIT_FAILURE_THRESHOLD", default: circuitFailureThreshold, in: 1...1_000_000)
        circuitRecoveryTimeoutMilliseconds = try reader.integer("REDIS_CIRCUIT_RECOVERY_TIMEOUT", default: circuitRecoveryTimeoutMilliseconds, in: 1...86_400_000)
        circuitSuccessThreshold = try reader.integer("REDIS_CIRCUIT_SUCCESS_THRESHOLD", default: circuitSuccessThreshold, in: 1...1_000_000)
        redisOperationTimeoutMilliseconds = try reader.integer("REDIS_OPERATION_TIMEOUT_MS", default: redisOperationTimeoutMilliseconds, in: 1...600_000)
        idempotencyTTLSeconds = try reader.integer("IDEMPOTENCY_TTL_SECONDS", default: idempotencyTTLSeconds, in: 1...31_536_000)
        guard idempotencyTTLSeconds * 1000 > idempotencyClaimLeaseMilliseconds else {
            // A record that expires while its claim is still leased would be taken over while the first request runs.
            throw SettingsError(
                variable: "IDEMPOTENCY_TTL_SECONDS",
                reason: "must be longer than the idempotency claim lease (\(idempotencyClaimLeaseMilliseconds / 1000) s), got \(idempotencyTTLSeconds)")
        }
        apiKeys = try reader.apiKeys("API_KEYS")
        adminToken = try reader.optionalSecret("ADMIN_TOKEN")
        userTokenKeys = try reader.userTokenKeys("USER_TOKEN_KEYS")
        corsAllowedOrigins = try reader.origins("CORS_ALLOWED_ORIGINS")
        demoUI = try reader.bool("DEMO_UI", default: demoUI)
        rateLimitPolicies = try reader.policies("RATE_LIMIT_POLICIES", default: rateLimitPolicies)
        routeGroupPolicies = try reader.routeGroupPolicies("routeGroupPolicies")
        eventRetentionSeconds = try reader.integer("EVENT_RETENTION_SECONDS", default: eventRetentionSeconds, in: 1...315_360_000)
        eventSyncFanoutLimit = try reader.integer("EVENT_SYNC_FANOUT_LIMIT", default: eventSyncFanoutLimit, in: 1...1_000_000)
        eventFanoutLeaseMilliseconds = try reader.integer("EVENT_FANOUT_LEASE_MS", default: eventFanoutLeaseMilliseconds, in: 1000...3_600_000)
        streamHeartbeatSeconds = try reader.integer("STREAM_HEARTBEAT_SECONDS", default: streamHeartbeatSeconds, in: 1...3600)
        streamPollIntervalMilliseconds = try reader.integer("STREAM_POLL_INTERVAL_MS", default: streamPollIntervalMilliseconds, in: 100...600_000)
        streamMaxConnections = try reader.integer("STREAM_MAX_CONNECTIONS", default: streamMaxConnections, in: 1...1_000_000)
        streamRetryMaxMilliseconds = try reader.integer("STREAM_RETRY_MAX_MS", default: streamRetryMaxMilliseconds, in: 1000...3_600_000)
        streamAcceptPerSecond = try reader.integer("STREAM_ACCEPT_PER_SECOND", default: streamAcceptPerSecond, in: 1...1_000_000)
        feedCacheTTLSeconds = try reader.integer("FEED_CACHE_TTL_SECONDS", default: feedCacheTTLSeconds, in: 1...86_400)
        feedRetentionDays = try reader.integer("FEED_RETENTION_DAYS", default: feedRetentionDays, in: 0...36_500)
        feedMaxPerUser = try reader.integer("FEED_MAX_PER_USER", default: feedMaxPerUser, in: 0...100_000_000)
        bulkSyncLimit = try reader.integer("BULK_SYNC_LIMIT", default: bulkSyncLimit, in: 1...10_000_000)
        feedNearCache = try reader.bool("FEED_NEAR_CACHE", default: feedNearCache)
        feedNearCacheMaxBytes = try reader.integer("FEED_NEAR_CACHE_MAX_BYTES", default: feedNearCacheMaxBytes, in: (1 << 20)...(1 << 40))
        lockTTLMilliseconds = try reader.integer("LOCK_TTL_MS", default: lockTTLMilliseconds, in: 10...3_600_000)
        lockWaitMilliseconds = try reader.integer("LOCK_WAIT_MS", default: lockWaitMilliseconds, in: 0...600_000)
        mongoOperationTimeoutMilliseconds = try reader.integer("MONGODB_OPERATION_TIMEOUT_MS", default: mongoOperationTimeoutMilliseconds, in: 1...600_000)
        shutdownGraceSeconds = try reader.integer("SHUTDOWN_GRACE_SECONDS", default: shutdownGraceSeconds, in: 0...3600)
        maxInFlight = try reader.integer("MAX_IN_FLIGHT", default: maxInFlight, in: 1...1_000_000)
        logLevel = try reader.logLevel("LOG_LEVEL", default: logLevel)
        logFormat = try reader.choice("LOG_FORMAT", default: logFormat)
        configFile = values["CONFIG_FILE"]
    }
}

/// `LOG_FORMAT`: `text` for people at a terminal, `json` (one object per line) for log shippers.
public enum LogFormat: String, Sendable, CaseIterable {
    case text
    case json
}

/// A configuration value that cannot be used; `description` is the one line start-up prints.
public struct SettingsError: Error, Sendable, CustomStringConvertible {
    public var variable: String
    public var reason: String

    public var description: String { "invalid \(variable): \(reason)" }
}

/// A key from `USER_TOKEN_KEYS`: `kid` names it in a token's header.
public struct UserTokenKey: Sendable, Equatable {
    public var kid: String
    public var secret: String
    /// An HMAC-SHA256 key shorter than the hash's output is below the algorithm's strength.
    public static let minimumSecretBytes = 32

    public init(kid: String, secret: String) {
        self.kid = kid
        self.secret = secret
    }
}

/// An API key from `API_KEYS`: the name labels policies and logs, the secret is the bearer token.
public struct APIKey: Sendable, Equatable {
    public var name: String
    public var secret: String

    public init(name: String, secret: String) {
        self.name = name
        self.secret = secret
    }
}
