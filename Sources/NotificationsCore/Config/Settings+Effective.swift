internal import Logging

/// The effective value of every variable as `check-config` prints it: defaults included,
/// secrets masked (API key names are shown, never their secrets; URL passwords are starred).
extension Settings {
    static let mask = "****"

    public var effectiveValues: [(name: String, value: String)] {
        [
            ("HOST", host), ("PORT", String(port)), ("REDIS_URL", Self.maskingPassword(redisURL)),
            ("MONGODB_URI", Self.maskingPassword(mongoURI)), ("REDIS_FAIL_OPEN", String(redisFailOpen)),
            ("REDIS_CIRCUIT_FAILURE_THRESHOLD", String(circuitFailureThreshold)),
            ("REDIS_CIRCUIT_RECOVERY_TIMEOUT", String(circuitRecoveryTimeoutMilliseconds)),
            ("REDIS_CIRCUIT_SUCCESS_THRESHOLD", String(circuitSuccessThreshold)),
            ("REDIS_OPERATION_TIMEOUT_MS", String(redisOperationTimeoutMilliseconds)),
            ("IDEMPOTENCY_TTL_SECONDS", String(idempotencyTTLSeconds)),
            ("API_KEYS", apiKeys.map { "\($0.name):\(Self.mask)" }.joined(separator: ",")),
            ("ADMIN_TOKEN", adminToken == nil ? "(unset: admin from loopback only)" : Self.mask),
            ("RATE_LIMIT_POLICIES", Self.describe(rateLimitPolicies)),
            ("EVENT_RETENTION_SECONDS", String(eventRetentionSeconds)), ("EVENT_SYNC_FANOUT_LIMIT", String(eventSyncFanoutLimit)),
            ("EVENT_FANOUT_LEASE_MS", String(eventFanoutLeaseMilliseconds)), ("STREAM_HEARTBEAT_SECONDS", String(streamHeartbeatSeconds)),
            ("STREAM_POLL_INTERVAL_MS", String(streamPollIntervalMilliseconds)), ("STREAM_MAX_CONNECTIONS", String(streamMaxConnections)),
            ("REDIS_SENTINELS", redisSentinels.joined(separator: ",")), ("REDIS_SENTINEL_MASTER", redisSentinelMaster ?? ""),
            ("FEED_CACHE_TTL_SECONDS", String(feedCacheTTLSeconds)), ("LOCK_TTL_MS", String(lockTTLMilliseconds)),
            ("LOCK_WAIT_MS", String(lockWaitMilliseconds)), ("MONGODB_OPERATION_TIMEOUT_MS", String(mongoOperationTimeoutMilliseconds)),
            ("SHUTDOWN_GRACE_SECONDS", String(shutdownGraceSeconds)), ("MAX_IN_FLIGHT", String(maxInFlight)),
            ("LOG_LEVEL", logLevel.rawValue), ("LOG_FORMAT", logFormat.rawValue), ("CONFIG_FILE", configFile ?? ""),
        ] + RouteGroup.allCases.compactMap { group in
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
