internal import Resilience
internal import Synchronization

/// The per-instance GCRA used while Redis is unusable (fail-open), with bounded memory:
/// at most `capacity` buckets, in two generations. New and touched buckets go into the newer
/// one; when it holds half the capacity, the older one is dropped and the newer becomes the
/// older. So a bucket in use is never forgotten, an idle one is forgotten after at most two
/// generations (like a refilled one), and a flood of distinct keys costs O(1) per key.
/// (Evicting from one big table instead, by scanning or by its storage order, costs a scan
/// per eviction or clusters its open addressing; both were measured at minutes per million.)
final class InMemoryRateLimiter: Sendable {
    private struct Generations {
        var newer: [String: Duration] = [:]
        var older: [String: Duration] = [:]
    }

    private let generations = Mutex(Generations())
    let capacity: Int
    private let start = ContinuousClock.now

    init(capacity: Int = 100_000) {
        precondition(capacity >= 2)
        self.capacity = capacity
    }

    func check(bucket: String, limit: GCRALimit) -> GCRADecision {
        let now = start.duration(to: .now)
        return generations.withLock { generations in
            let known = generations.newer[bucket] ?? generations.older[bucket]
            let (decision, newTAT) = GCRA.check(limit: limit, tat: known, now: now)
            // A refused request leaves the arrival time as it was, but still marks the bucket as in use.
            guard let tat = newTAT ?? known else { return decision }
            if generations.newer[bucket] == nil && generations.newer.count >= capacity / 2 {
                generations.older = generations.newer
                generations.newer = [:]
            }
            generations.newer[bucket] = tat
            return decision
        }
    }

    var count: Int { generations.withLock { $0.newer.count + $0.older.count } }
}
