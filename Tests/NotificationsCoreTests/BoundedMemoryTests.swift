import Foundation
@testable import NotificationsCore
import Resilience
import Testing

/// Every per-key structure of an instance has a bound, so that no stream of distinct keys
/// (API keys, idempotency keys, users) can grow the process without limit.
@Suite("Bounded memory: every per-key structure has a bound")
struct BoundedMemoryTests {
    static let slow = GCRALimit(limit: 1, window: .seconds(3600))

    /// Small numbers on purpose: a synchronous test holds one of the few threads of the
    /// concurrency pool that every other test shares while it runs.
    @Test func theInMemoryLimiterKeepsAtMostItsCapacityAndNeverForgetsABucketInUse() {
        let limiter = InMemoryRateLimiter(capacity: 100)
        #expect(limiter.check(bucket: "busy", limit: Self.slow).allowed)
        var largest = 0
        var busyForgotten = false
        for index in 0..<1000 {
            _ = limiter.check(bucket: "k\(index)", limit: Self.slow)
            if index % 10 == 0 { busyForgotten = busyForgotten || limiter.check(bucket: "busy", limit: Self.slow).allowed }
            largest = max(largest, limiter.count)
        }
        #expect(largest <= 100)
        #expect(!busyForgotten, "a bucket in use stays limited")
        #expect(limiter.count >= 50, "the older generation goes, not everything")
        // An idle bucket is forgotten after two generations, like one that refilled.
        #expect(limiter.check(bucket: "k0", limit: Self.slow).allowed)
    }

    @Test func locallyStaleUsersStopAtTheirCapacity() {
        let stale = StaleUsers(capacity: 100)
        for index in 0..<300 { stale.insert("u\(index)") }
        #expect(stale.count == 100)
        stale.insert("u0")
        stale.remove(["u0"])
        #expect(stale.contains("u0"), "two marks pending, one landed")
        stale.remove(["u0"])
        #expect(!stale.contains("u0"))
    }

    /// Runs in a child process (an exit test), so the resident size measured is that of a
    /// fresh process holding the structures, not of the test runner with its servers. The
    /// parent waits on a thread of the concurrency pool for the ten seconds the child takes in
    /// a debug build, which starves the timing tests running beside it; so `scripts/test` runs
    /// it on its own, after the others (`BOUNDED_MEMORY_MILLION=1`).
    @Test(.enabled(if: ProcessInfo.processInfo.environment["BOUNDED_MEMORY_MILLION"] == "1"))
    func aMillionDistinctLimiterAndIdempotencyKeysStayUnder200MiB() async {
        let result = await #expect(processExitsWith: .success, observing: [\.standardOutputContent]) {
            let limiter = InMemoryRateLimiter()
            let memory = IdempotencyMemory()
            let stale = StaleUsers()
            let record = IdempotencyRecord(
                fingerprint: String(repeating: "f", count: 64),
                response: .init(status: 201, body: Array(repeating: 65, count: 400), contentType: "application/json", location: "/v1/notifications/x"),
                expiresAt: Timestamp(milliseconds: .max))
            for index in 0..<1_000_000 {
                _ = limiter.check(bucket: "ratelimit:default:key-\(index)", limit: BoundedMemoryTests.slow)
                memory.put("idem:key-\(index):\(UUID().uuidString)", record)
                stale.insert("user-\(index)")
            }
            let rss = BoundedMemoryTests.residentMiB()
            print("1,000,000 distinct keys each: limiter \(limiter.count), idempotency \(memory.count) (\(memory.bytes >> 20) MiB), stale \(stale.count); RSS \(rss) MiB")
            exit(limiter.count <= limiter.capacity && memory.count <= memory.maxCount && stale.count <= stale.capacity && rss < 200 ? 0 : 1)
        }
        print(String(decoding: result?.standardOutputContent ?? [], as: UTF8.self), terminator: "")
    }

    /// This process's resident set (VmRSS of /proc/self/status), in MiB.
    static func residentMiB() -> Int {
        let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
        let line = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") } ?? ""
        return (Int(line.split(separator: " ").dropFirst().first ?? "") ?? .max) / 1024
    }
}
