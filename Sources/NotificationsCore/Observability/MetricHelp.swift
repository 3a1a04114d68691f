/// The `# HELP` text of every metric family this service exports. swift-metrics has no help
/// texts, so the exposition gets them here (`annotate`), one table for code review, dashboards
/// and `promtool check metrics` alike.
public enum MetricHelp {
    public static let texts: [String: String] = [
        "redis_circuit_breaker_state": "State of the Redis circuit breaker: 0 closed, 1 half-open, 2 open. On a cluster, one series per master (node) and, without node, the worst of them.",
        "redis_circuit_breaker_failures_total": "Redis calls that failed and counted against the circuit breaker (per master on a cluster; without node, all of them).",
        "redis_operations_fallback_total": "Operations served without Redis (in-memory limiter, MongoDB, no lock, polling), by operation.",
        "rate_limit_bypass_total": "Requests let through by the in-memory limiter because Redis was unusable (fail-open).",
        "notifications_created_total": "Notifications stored, by single create and by event fan-out.",
        "notifications_removed_total": "Notifications deleted by the retention remover, by reason (expired, retention, cap).",
        "http_requests_total": "HTTP requests answered, by method, route template and status.",
        "http_request_duration_seconds": "Time to answer an HTTP request (until its response head), by method and route template.",
        "http_requests_shed_total": "Requests answered 503 overloaded without being processed, by reason.",
        "feed_cache_requests_total": "Cacheable reads (feeds, unread counts, followers) by how the Redis feed cache served them: hit, miss, bypass.",
        "feed_near_cache_hits_total": "Cacheable reads answered from this instance's near cache (X-Cache-Tier: local), with no Redis round trip.",
        "feed_near_cache_bytes": "Bytes held by this instance's near cache (FEED_NEAR_CACHE_MAX_BYTES bounds it).",
        "feed_near_cache_invalidations_total": "Users whose near-cache entries a Redis invalidation message dropped.",
        "feed_near_cache_flushes_total": "Times the near cache was emptied, by reason: connection (invalidations stopped), breaker (circuit opened), server (FLUSHALL).",
        "http_requests_in_flight": "/v1 requests being processed now (MAX_IN_FLIGHT bounds them).",
        "background_writes_pending": "MongoDB writes waiting to be retried in the background, by queue.",
        "background_writes_dropped_total": "Background MongoDB writes given up on (queue full or retries exhausted), by queue.",
        "events_total": "Events by outcome (accepted, duplicate, in_progress) and recipients skipped (suppressed).",
        "event_fanout_seconds": "Time to fan one event out to its followers.",
        "event_fanouts_in_progress": "Event fan-outs running in the background on this instance.",
        "sse_connections": "Server-Sent Events streams open on this instance.",
        "sse_events_sent_total": "Server-Sent Events written to clients, by event.",
        "sse_delivery_seconds": "Time from a notification's write to its delivery on a stream.",
        "mongodb_queries_total": "MongoDB queries sent, by purpose (the streams' shared check, poll, resume and open queries; feed pages and counts the cache could not answer).",
    ]

    /// Adds `# HELP name text` before each `# TYPE name ...` line of a text exposition.
    public static func annotate(_ exposition: [UInt8]) -> [UInt8] {
        var output: [UInt8] = []
        output.reserveCapacity(exposition.count + texts.count * 96)
        let typePrefix = Array("# TYPE ".utf8)
        for line in exposition.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) {
            if line.starts(with: typePrefix) {
                let name = String(decoding: line.dropFirst(typePrefix.count).prefix { $0 != UInt8(ascii: " ") }, as: UTF8.self)
                if let help = texts[name] { output += Array("# HELP \(name) \(help)\n".utf8) }
            }
            output += line
            output.append(UInt8(ascii: "\n"))
        }
        // `split` keeps the text's final empty piece: no newline is added after it.
        if !output.isEmpty { output.removeLast() }
        return output
    }
}
