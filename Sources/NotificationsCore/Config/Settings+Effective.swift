internal import Logging

/// The effective value of every variable as `check-config` prints it: defaults included,
/// secrets masked (API key names are shown, never their secrets; URL passwords are starred).
extension Settings {
    static let mask = "****"

    /// Every variable, in the order `check-config` prints them, with how its effective value is
    /// shown. `variableNames` is read from this table, so a new variable is listed once.
    static let variables: [(name: String, effective: @Sendable (Settings) -> String)] = [
        ("HOST", \.host), ("PORT", { String($0.port) }), ("REDIS_URL", { maskingPassword($0.redisURL) }),
        ("MONGODB_URI", { maskingPassword($0.mongoURI) }), ("REDIS_FAIL_OPEN", { String($0.redisFailOpen) }),
        ("REDIS_CIRCUIT_FAILURE_THRESHOLD", { String($0.circuitFailureThreshold) }),
        ("REDIS_CIRCUIT_RECOVERY_TIMEOUT", { String($0.circuitRecoveryTimeoutMilliseconds) }),
        ("REDIS_CIRCUIT_SUCCESS_THRESHOLD", { String($0.circuitSuccessThreshold) }),
        ("REDIS_OPERATION_TIMEOUT_MS", { String($0.redisOperationTimeoutMilliseconds) }),
        ("IDEMPOTENCY_TTL_SECONDS", { String($0.idempotencyTTLSeconds) }),
        ("API_KEYS", { $0.apiKeys.map { "\($0.name):\(mask)" }.joined(separator: ",") }),
        ("ADMIN_TOKEN", { $0.adminToken == nil ? "(unset: admin from loopback only)" : mask }),
        ("USER_TOKEN_KEYS", { $0.userTokenKeys.isEmpty ? "(unset: user tokens off)" : $0.userTokenKeys.map { "\($0.kid):\(mask)" }.joined(separator: ",") }),
        ("CORS_ALLOWED_ORIGINS", { $0.corsAllowedOrigins.joined(separator: ",") }), ("DEMO_UI", { String($0.demoUI) }),
        ("RATE_LIMIT_POLICIES", { describe($0.rateLimitPolicies) }),
        ("EVENT_RETENTION_SECONDS", { String($0.eventRetentionSeconds) }),
        ("EVENT_SYNC_FANOUT_LIMIT", { String($0.eventSyncFanoutLimit) }),
        ("EVENT_FANOUT_LEASE_MS", { String($0.eventFanoutLeaseMilliseconds) }),
        ("STREAM_HEARTBEAT_SECONDS", { String($0.streamHeartbeatSeconds) }),
        ("STREAM_POLL_INTERVAL_MS", { String($0.streamPollIntervalMilliseconds) }),
        ("STREAM_MAX_CONNECTIONS", { String($0.streamMaxConnections) }),
        ("STREAM_RETRY_MAX_MS", { String($0.streamRetryMaxMilliseconds) }),
        ("STREAM_ACCEPT_PER_SECOND", { String($0.streamAcceptPerSecond) }),
        ("REDIS_SENTINELS", { $0.redisSentinels.joined(separator: ",") }),
        ("REDIS_SENTINEL_MASTER", { $0.redisSentinelMaster ?? "" }),
        ("REDIS_CLUSTER_NODES", { $0.redisClusterNodes.joined(separator: ",") }),
        ("FEED_CACHE_TTL_SECONDS", { String($0.feedCacheTTLSeconds) }),
        ("FEED_RETENTION_DAYS", { String($0.feedRetentionDays) }), ("FEED_MAX_PER_USER", { String($0.feedMaxPerUser) }),
        ("BULK_SYNC_LIMIT", { String($0.bulkSyncLimit) }),
        ("FEED_NEAR_CACHE", { String($0.feedNearCache) }), ("FEED_NEAR_CACHE_MAX_BYTES", { String($0.feedNearCacheMaxBytes) }),
        ("LOCK_TTL_MS", { String($0.lockTTLMilliseconds) }),
        ("LOCK_WAIT_MS", { String($0.lockWaitMilliseconds) }),
        ("MONGODB_OPERATION_TIMEOUT_MS", { String($0.mongoOperationTimeoutMilliseconds) }),
        ("SHUTDOWN_GRACE_SECONDS", { String($0.shutdownGraceSeconds) }), ("MAX_IN_FLIGHT", { String($0.maxInFlight) }),
        ("LOG_LEVEL", \.logLevel.rawValue), ("LOG_FORMAT", \.logFormat.rawValue), ("CONFIG_FILE", { $0.configFile ?? "" }),
    ]

    public var effectiveValues: [(name: String, value: String)] {
        Self.variables.map { ($0.name, $0.effective(self)) }
            + RouteGroup.allCases.compactMap { group in
                routeGroupPolicies[group].map { ("\(ConfigFile.routeGroupPoliciesKey).\(group.rawValue)", Self.describe($0)) }
            }
    }

    static func describe(_ policies: [RateLimitPolicy]) -> String {
        policies.map { policy in
            "\(policy.name):\(policy.limit.map(String.init) ?? "unlimited")/\(policy.windowMilliseconds)ms"
        }.joined(separator: ",")
    }

    /// `scheme://user:secret@host` → `scheme://user:****@host`; a URL without a password is unchanged.
    static func maskingPassword(_ url: String) -> String {
        guard let schemeEnd = url.firstRange(of: "://"), let at = url[schemeEnd.upperBound...].lastIndex(of: "@") else { return url }
        let userInfo = url[schemeEnd.upperBound..<at]
        guard let colon = userInfo.firstIndex(of: ":") else { return url }
        return String(url[..<url.index(after: colon)]) + mask + String(url[at...])
    }
}
