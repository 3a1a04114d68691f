import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import MongoStore
@testable import NotificationsCore
import NotificationsHTTP
import Testing
import TestSupport

/// Retention (issue 18): `expiresAt`, `FEED_RETENTION_DAYS`, `FEED_MAX_PER_USER`, against the
/// real servers with the remover running (every second here; every 15 s by default).
@Suite("Retention")
struct RetentionTests {
    static func ids(_ harness: Harness, _ path: String) async throws -> [String] {
        let page = try await harness.client.get(path).jsonObject()
        return (page["items"] as? [[String: Any]] ?? []).compactMap { $0["id"] as? String }
    }

    static func stored(_ harness: Harness, _ user: String) async throws -> [String] {
        try await harness.environment.mongoPool.collection("notifications").find(["recipientId": .string(user)])
            .compactMap { $0["_id"]?.objectID?.description }.sorted(by: >)
    }

    @Test func anExpiredNotificationLeavesReadsAtOnceAndTheCountsSoonAfter() async throws {
        try await withHarness(configure: {
            $0.retentionInterval = .seconds(60)
            $0.streamHeartbeatSeconds = 1
        }) { harness in
            let user = "expiring"
            let keep = try await harness.client.create(recipient: user)["id"] as? String ?? ""
            let expiresAt = SystemWallClock().now().advanced(by: .seconds(2))
            let response = try await harness.client.post(
                "/v1/notifications", json: #"{"recipientId": "\#(user)", "type": "flash.sale", "expiresAt": "\#(expiresAt.rfc3339)"}"#)
            #expect(response.status == .created)
            let created = try response.jsonObject()
            let expiring = created["id"] as? String ?? ""
            #expect(created["expiresAt"] as? String == expiresAt.rfc3339)
            let feed = "/v1/users/\(user)/notifications"
            #expect(try await Self.ids(harness, feed) == [expiring, keep])
            #expect(try await harness.client.get(feed).headers[CacheAndLockTests.xCache] == "hit", "cached until the item expires")
            // Its state can be changed while it lives.
            #expect(try await InboxStateTests.post(harness, "\(feed)/\(expiring)/seen", nil).status == .ok)
            try await Task.sleep(for: .milliseconds(max(0, expiresAt.milliseconds - SystemWallClock().now().milliseconds) + 50))
            // Gone at once: the cached page, filters, a resume, a state change (the remover
            // runs only every 60 s in this test, so the reads alone hide it).
            #expect(try await Self.ids(harness, feed) == [keep])
            #expect(try await Self.ids(harness, "\(feed)?archived=include&status=seen").isEmpty)
            let stream = try await StreamTests.open(harness, user, lastEventID: keep)
            defer { stream.close() }
            #expect(try await StreamTests.nextNotification(stream, timeout: .milliseconds(800)) == nil, "no resume of an expired notification")
            #expect(try await InboxStateTests.post(harness, "\(feed)/\(expiring)/read", nil).status == .notFound)
            #expect(try await Self.stored(harness, user).count == 2, "still stored until the remover runs")
            // The remover's pass: removed, counted, and the counts follow.
            let removed = try await harness.environment.retentionSweeper().pass()
            #expect(removed[.expired] == 1)
            #expect(try await Self.stored(harness, user) == [keep])
            #expect(try await InboxStateTests.counts(harness, user) == Counts(unread: 1, unseen: 1, total: 1))
            #expect(try await harness.metric("notifications_removed_total", #"reason="expired""#) == 1)
        }
    }

    @Test func anEventsNotificationsCarryItsExpiry() async throws {
        try await withHarness { harness in
            let expiresAt = SystemWallClock().now().advanced(by: .seconds(3600))
            let response = try await harness.client.post(
                "/v1/events",
                json: #"{"id": "ev-expiring", "type": "promo", "actorId": "shop", "audience": {"userIds": ["e1", "e2"]}, "expiresAt": "\#(expiresAt.rfc3339)"}"#)
            #expect(response.status == .accepted)
            for user in ["e1", "e2"] {
                let page = try await harness.client.get("/v1/users/\(user)/notifications").jsonObject()
                #expect((page["items"] as? [[String: Any]])?.first?["expiresAt"] as? String == expiresAt.rfc3339)
            }
        }
    }

    @Test func expiresAtInThePastTooFarOrMalformedIs400AndStoresNothing() async throws {
        try await withHarness { harness in
            let now = SystemWallClock().now()
            for value in [now.advanced(by: .seconds(-1)).rfc3339, now.advanced(by: .seconds(366 * 86_400)).rfc3339, "tomorrow", "2030-02-30T00:00:00Z"] {
                let single = try await harness.client.post(
                    "/v1/notifications", json: #"{"recipientId": "never", "type": "t", "expiresAt": "\#(value)"}"#)
                try expectValidationProblem(single, field: "expiresAt")
                let event = try await harness.client.post(
                    "/v1/events", json: #"{"id": "ev-bad-expiry", "type": "t", "actorId": "a", "audience": {"userIds": ["never"]}, "expiresAt": "\#(value)"}"#)
                try expectValidationProblem(event, field: "expiresAt")
            }
            let number = try await harness.client.post("/v1/notifications", json: #"{"recipientId": "never", "type": "t", "expiresAt": 12}"#)
            try expectValidationProblem(number, field: "expiresAt")
            #expect(try await Self.stored(harness, "never").isEmpty)
            // 365 days ahead is the limit, and allowed.
            let edge = try await harness.client.post(
                "/v1/notifications", json: #"{"recipientId": "never", "type": "t", "expiresAt": "\#(now.advanced(by: .seconds(365 * 86_400 - 60)).rfc3339)"}"#)
            #expect(edge.status == .created)
        }
    }

    /// `FEED_MAX_PER_USER=100`, 250 creates: the newest 100 remain within 60 s (here the
    /// remover runs every second), and the counts are those of what remains.
    @Test func aUserBeyondTheCapKeepsTheirNewest() async throws {
        try await withHarness(configure: {
            $0.feedMaxPerUser = 100
            $0.retentionInterval = .seconds(1)
        }) { harness in
            let user = "capped"
            let feed = harness.environment.services.feed
            // Ten writers at once (group commit), as a busy producer would.
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<10 {
                    group.addTask { for _ in 0..<25 { _ = try await feed.create(NewNotification(recipientId: user, type: "bulk")) } }
                }
                try await group.waitForAll()
            }
            let other = try await harness.client.create(recipient: "uncapped-neighbour")["id"] as? String
            let all = try await Self.stored(harness, user)
            #expect(all.count >= 100 && all.count <= 250, "the remover may already have begun")
            let newest = Array(all.prefix(100))
            #expect(newest.count == 100)
            _ = try await retrying(for: .seconds(60), every: .milliseconds(500)) { try await Self.stored(harness, user) } until: { $0 == newest }
            #expect(try await Self.stored(harness, user) == newest)
            let truth = try await InboxStateTests.truth(harness, user)
            #expect(truth.total == 100)
            _ = try await retrying(for: .seconds(15), every: .milliseconds(300)) { try await InboxStateTests.counts(harness, user) } until: { $0 == truth }
            #expect(try await InboxStateTests.counts(harness, user) == truth)
            #expect(try await harness.metric("notifications_removed_total", #"reason="cap""#) == 150)
            #expect(try await Self.stored(harness, "uncapped-neighbour") == [other].compactMap { $0 })
            // A page after the removal shows only what remains.
            let page = try await harness.client.get("/v1/users/\(user)/notifications?limit=100").jsonObject()
            #expect((page["items"] as? [[String: Any]])?.count == 100 && page["nextCursor"] is NSNull)
        }
    }

    @Test func notificationsOlderThanTheRetentionAreRemoved() async throws {
        try await withHarness(configure: {
            $0.feedRetentionDays = 1
            $0.retentionInterval = .seconds(1)
        }) { harness in
            let user = "ageing"
            let feed = harness.environment.services.feed
            let old = SystemWallClock().now().advanced(by: .seconds(-2 * 86_400))
            var stale: [String] = []
            for offset in 0..<3 {
                let id = ObjectIDs.new(at: old.advanced(by: .seconds(offset)))
                stale.append(try await feed.create(NewNotification(recipientId: user, type: "old"), plannedID: id).id)
            }
            let fresh = try await harness.client.create(recipient: user)["id"] as? String ?? ""
            #expect(try await Self.stored(harness, user).contains(fresh))
            _ = try await retrying(for: .seconds(30), every: .milliseconds(300)) { try await Self.stored(harness, user) } until: { $0 == [fresh] }
            #expect(try await Self.stored(harness, user) == [fresh])
            _ = try await retrying(for: .seconds(15), every: .milliseconds(300)) { try await InboxStateTests.counts(harness, user) } until: {
                $0 == Counts(unread: 1, unseen: 1, total: 1)
            }
            #expect(try await InboxStateTests.counts(harness, user) == Counts(unread: 1, unseen: 1, total: 1))
            #expect(try await harness.metric("notifications_removed_total", #"reason="retention""#) == 3)
        }
    }

    /// Instances take turns: while one holds the remover's lease, another's pass does nothing;
    /// once the holder stops renewing, the lease is taken.
    @Test func oneInstanceAtATimeHoldsTheRemoversLease() async throws {
        try await withHarness(configure: { $0.retentionInterval = .seconds(600) }) { harness in
            let lease = MongoLease(leases: harness.environment.mongoPool.collection("leases"), name: "test", duration: .seconds(1), clock: SystemWallClock())
            #expect(try await lease.acquire(token: "a"))
            #expect(try await !lease.acquire(token: "b"))
            #expect(try await lease.renew(token: "a"))
            #expect(try await !lease.renew(token: "b"))
            try await Task.sleep(for: .milliseconds(1100))
            #expect(try await lease.acquire(token: "b"), "taken once its holder stopped renewing")
            #expect(try await !lease.renew(token: "a"), "the old holder's renewal is refused")
            try await lease.release(token: "b")
            #expect(try await lease.acquire(token: "c"), "free at once after a release")
        }
    }
}
