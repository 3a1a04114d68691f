import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import MongoStore
@testable import NotificationsCore
import NotificationsHTTP
import Testing
import TestSupport

/// Inbox writes under faults (issue 18): MongoDB frozen past the deadline in the middle of a
/// batch, a seen-all, an archive-all or a background read-all, then thawed; Redis killed in
/// the middle of them. Whatever each request answered, the four counts equal a recount of the
/// stored documents within 15 s, and a background operation reports exactly what it changed.
@Suite("Inbox writes under faults")
struct InboxFaultTests {
    static let seeded = 300

    /// The request of `operation` for `user`: path and body.
    static func request(_ operation: String, _ user: String, ids: [String]) -> (String, String?) {
        switch operation {
        case "batch":
            let chosen = ids.prefix(250).map { "\"\($0)\"" }.joined(separator: ",")
            return ("/v1/users/\(user)/notifications/batch", #"{"action": "read", "ids": [\#(chosen)]}"#)
        case "read-all-background": return ("/v1/users/\(user)/notifications/read-all", nil)
        default: return ("/v1/users/\(user)/notifications/\(operation)", nil)
        }
    }

    /// Waits (at most 15 s) until the counts equal the recount of the stored documents.
    static func expectConverged(_ harness: Harness, _ user: String, sourceLocation: SourceLocation = #_sourceLocation) async throws {
        let started = ContinuousClock.now
        let settled = try await retrying(for: .seconds(15), every: .milliseconds(250)) {
            (try await InboxStateTests.counts(harness, user), try await InboxStateTests.truth(harness, user))
        } until: { $0.0 == $0.1 }
        #expect(settled.0 == settled.1, "counts \(settled.0), stored \(settled.1)", sourceLocation: sourceLocation)
        #expect(ContinuousClock.now - started < .seconds(15), sourceLocation: sourceLocation)
    }

    /// A background operation's `updated` once completed (the 202's operation), or nil.
    static func completedUpdate(_ harness: Harness, _ user: String, _ response: TestResponse) async throws -> Int? {
        guard response.status == .accepted, let id = try response.jsonObject()["operationId"] as? String else { return nil }
        let done = try await retrying(for: .seconds(60), every: .milliseconds(300)) { try await AllAtOnceTests.operation(harness, user, id) } until: {
            $0.1["status"] as? String == "completed"
        }
        #expect(done.1["status"] as? String == "completed")
        return done.1["updated"] as? Int
    }

    @Test(arguments: ["batch", "seen-all", "archive-all", "read-all-background"])
    func mongoDBFrozenMidWriteThenThawedLeavesExactCounts(operation: String) async throws {
        try await withHarness(configure: {
            $0.bulkSyncLimit = 100
            $0.eventFanoutLeaseMilliseconds = 2000
        }) { harness in
            let user = "frozen-\(operation)"
            let ids = try await AllAtOnceTests.seed(harness, user, count: Self.seeded)
            try await Self.expectConverged(harness, user)
            let (path, body) = Self.request(operation, user, ids: ids)
            let sent = Task { try await InboxStateTests.post(harness, path, body) }
            // Frozen once the write is under way, past the 1.5 s deadline, then thawed.
            try await Task.sleep(for: .milliseconds(operation == "read-all-background" ? 400 : 120))
            harness.mongo.pause()
            try await Task.sleep(for: .milliseconds(2500))
            harness.mongo.resume()
            let response = try await sent.value
            #expect([.ok, .accepted, .serviceUnavailable].contains(response.status), "\(operation): \(response.status) \(response.text)")
            try await Self.expectConverged(harness, user)
            if operation == "read-all-background" {
                // The background operation survives the freeze and counts each change once.
                let updated = try await Self.completedUpdate(harness, user, response)
                #expect(updated == Self.seeded, "updated \(String(describing: updated))")
                #expect(try await InboxStateTests.truth(harness, user).unread == 0)
                try await Self.expectConverged(harness, user)
            }
        }
    }

    @Test(arguments: ["batch", "seen-all", "archive-all"])
    func redisKilledMidWriteLeavesExactCountsAndFreshReads(operation: String) async throws {
        try await withHarness { harness in
            let user = "redis-gone-\(operation)"
            let ids = try await AllAtOnceTests.seed(harness, user, count: Self.seeded)
            try await Self.expectConverged(harness, user)
            let (path, body) = Self.request(operation, user, ids: ids)
            let sent = Task { try await InboxStateTests.post(harness, path, body) }
            try await Task.sleep(for: .milliseconds(60))
            harness.redis.kill()
            let response = try await sent.value
            // The lock fails open (REDIS_FAIL_OPEN=true): the write is done without it.
            #expect(response.status == .ok, "\(operation): \(response.status) \(response.text)")
            // Reads bypass the cache while Redis is gone: the counts and the feed are fresh.
            try await Self.expectConverged(harness, user)
            try await harness.redis.restart()
            try await Self.expectConverged(harness, user)
        }
    }
}
