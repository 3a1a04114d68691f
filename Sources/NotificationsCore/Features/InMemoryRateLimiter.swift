internal import Resilience
internal import Synchronization

/// The per-instance GCRA used while Redis is unusable (fail-open), with bounded memory:
/// at most `capacity` buckets; when full, buckets that have refilled (which are the same
/// as absent) are dropped first, then arbitrary ones.
final class InMemoryRateLimiter: Sendable {
    private let buckets = Mutex<[String: Duration]>([:])
    private let capacity: Int
    private let start = ContinuousClock.now

    init(capacity: Int = 100_000) {
        self.capacity = capacity
    }

    func check(bucket: String, limit: GCRALimit) -> GCRADecision {
        let now = start.duration(to: .now)
        return buckets.withLock { buckets in
            let (decision, newTAT) = GCRA.check(limit: limit, tat: buckets[bucket], now: now)
            if let newTAT {
                if buckets[bucket] == nil && buckets.count >= capacity { Self.evict(&buckets, now: now, capacity: capacity) }
                buckets[bucket] = newTAT
            }
            return decision
        }
    }

    private static func evict(_ buckets: inout [String: Duration], now: Duration, capacity: Int) {
        buckets = buckets.filter { $0.value > now }
        while buckets.count >= capacity, let victim = buckets.keys.first {
            buckets[victim] = nil
        }
    }
}
