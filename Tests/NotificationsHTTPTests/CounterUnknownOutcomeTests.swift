import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import MongoStore
@testable import NotificationsCore
import NotificationsHTTP
import Testing
import TestSupport

/// Unread counters and late inserts when a MongoDB write times out and the server may apply it
/// later (issue 7, items 7, 8 and 12; issue 17, item 11). The fault is real: the MongoDB-wire
/// server is frozen with SIGSTOP past the 1.5 s deadline, then resumed, and applies what it had
/// received. A write is announced on its counters before it is sent, so a freeze usually
/// catches the announcement (which lands late, and is resolved); a freeze between an
/// announcement and its write is set up by hand in `CounterAnnouncementTests`. Counts are
/// checked against the truth: a recount of the stored notifications.
@Suite("Unread counters and late inserts: writes of unknown outcome")
struct CounterUnknownOutcomeTests {
    static func counter(_ harness: Harness, _ user: String) async throws -> BSONDocument? {
        try await harness.environment.mongoPool.collection("user_counters").findOne(["_id": .string(user)])
    }

    /// The user's unread notifications as MongoDB holds them.
    static func truth(_ harness: Harness, _ user: String) async throws -> Int {
        try await harness.environment.mongoPool.collection("notifications").find(["recipientId": .string(user), "readAt": .null]).count
    }

    /// Reads the user's count (each read steps the reconciliation) until the stored counter is no longer stale.
    static func reconciledCounter(_ harness: Harness, _ user: String) async throws -> BSONDocument? {
        try await retrying(for: .seconds(20), every: .milliseconds(400)) {
            _ = try await harness.unreadCount(user)
            return try await counter(harness, user)
        } until: { $0?["stale"]?.bool == false }
    }

    /// Item 7: read, read-all and delete that time out (and may be applied late); the client's retry changes nothing.
    @Test(arguments: ["read", "read-all", "delete"])
    func aCountedWriteAppliedAfterItsTimeoutIsRecounted(operation: String) async throws {
        try await withHarness { harness in
            let user = "late-\(operation)"
            let id = try await harness.client.create(recipient: user)["id"] as? String ?? ""
            #expect(try await harness.unreadCount(user) == 1)
            let (method, path): (HTTPRequest.Method, String) = switch operation {
            case "read": (.post, "/v1/users/\(user)/notifications/\(id)/read")
            case "read-all": (.post, "/v1/users/\(user)/notifications/read-all")
            default: (.delete, "/v1/users/\(user)/notifications/\(id)")
            }
            harness.mongo.pause()
            let frozen = try await harness.client.execute(uri: path, method: method, headers: authorized)
            harness.mongo.resume()
            #expect(frozen.status == .serviceUnavailable)
            let retried = try await retrying(for: .seconds(10)) {
                try await harness.client.execute(uri: path, method: method, headers: authorized)
            } until: { $0.status != .serviceUnavailable }
            #expect(retried.status != .serviceUnavailable)
            let count = try await retrying(for: .seconds(10)) { try await harness.unreadCount(user) } until: { $0 == 0 }
            #expect(count == 0, "the counter must not stay one too high")
        }
    }

    /// Item 8: the write of unknown outcome happens on another instance; this one (and a fresh
    /// one) must converge to the true count within FEED_CACHE_TTL_SECONDS of MongoDB answering.
    @Test func everyInstanceConvergesAfterAnotherInstancesWriteOfUnknownOutcome() async throws {
        try await withHarness(configure: { $0.feedCacheTTLSeconds = 3 }) { harness in
            let user = "shared-counter"
            let id = try await harness.client.create(recipient: user)["id"] as? String ?? ""
            _ = try await harness.client.create(recipient: user)
            #expect(try await harness.unreadCount(user) == 2)
            try await harness.withOtherInstance { other in
                // A running instance: connected to MongoDB before it freezes (a first connection would fail before sending anything).
                _ = try await other.services.feed.page(userId: user, limit: 1, cursor: nil)
                harness.mongo.pause()
                await #expect(throws: StoreError.self) { _ = try await other.services.feed.setState(.read, userId: user, id: id) }
                harness.mongo.resume()
                let resumed = ContinuousClock.now
                let (count, truth) = try await retrying(for: .seconds(8)) {
                    (try await harness.unreadCount(user), try await Self.truth(harness, user))
                } until: { $0.0 == $0.1 }
                #expect(count == truth)
                // Within the cache TTL (3 s here) of MongoDB answering, plus the marks' two confirmations.
                #expect(ContinuousClock.now - resumed < .seconds(3 + 4))
            }
            let truth = try await Self.truth(harness, user)
            try await harness.withOtherInstance { fresh in
                let body = try await fresh.services.feed.unreadCount(userId: user).body
                #expect(String(decoding: body, as: UTF8.self) == #"{"unreadCount":\#(truth)}"#, "a restarted instance does not forget")
            }
            // The counter itself is reconciled, not recounted forever.
            let counter = try await Self.reconciledCounter(harness, user)
            #expect(counter?["stale"]?.bool == false)
            #expect(counter?["unread"]?.int64 == Int64(truth))
        }
    }

    /// Item 8: a recount races creates (their `$inc` land during it): the reconciled counter
    /// neither loses nor doubles them.
    @Test func aRecountRacingCreatesNeitherLosesNorDoublesThem() async throws {
        try await withHarness(configure: { $0.feedCacheTTLSeconds = 1 }) { harness in
            let user = "racing"
            var ids: [String] = []
            for _ in 0..<3 { ids.append(try await harness.client.create(recipient: user)["id"] as? String ?? "") }
            harness.mongo.pause()
            // A counting write (announced before it is sent) whose outcome is unknown. (A read-all
            // now reads which batch to change first, so a frozen server fails it before any write.)
            let frozen = try await InboxStateTests.post(
                harness, "/v1/users/\(user)/notifications/batch", #"{"action": "read", "ids": [\#(ids.map { "\"\($0)\"" }.joined(separator: ","))]}"#)
            harness.mongo.resume()
            #expect(frozen.status == .serviceUnavailable)
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    for _ in 0..<12 { _ = try await harness.client.create(recipient: user) }
                }
                group.addTask {
                    for _ in 0..<12 {
                        _ = try await harness.unreadCount(user)
                        try await Task.sleep(for: .milliseconds(150))
                    }
                }
                try await group.waitForAll()
            }
            let truth = try await Self.truth(harness, user)
            #expect(truth == 15 || truth == 12, "the batch was applied entirely or not at all")
            let counter = try await Self.reconciledCounter(harness, user)
            #expect(counter?["stale"]?.bool == false)
            #expect(counter?["unread"]?.int64 == Int64(truth))
            #expect(try await harness.unreadCount(user) == truth)
        }
    }

    /// Item 12: creates that time out during an outage are undone once MongoDB is back, by one
    /// worker in a few batched deletes (not one task and one delete per document).
    @Test func lateInsertsAfterAnOutageAreUndoneInFewBatches() async throws {
        try await withHarness { harness in
            harness.mongo.pause()
            // Twenty creates at once (through the feature: the test's HTTP client sends one request at a time).
            let failures = await withTaskGroup(of: Bool.self) { group in
                for index in 0..<20 {
                    group.addTask {
                        do {
                            _ = try await harness.environment.services.feed.create(NewNotification(recipientId: "outage", type: "t\(index)"))
                            return false
                        } catch {
                            return error is StoreError
                        }
                    }
                }
                return await group.reduce(into: 0) { $0 += $1 ? 1 : 0 }
            }
            #expect(failures == 20)
            // Group commit: the creates that reached MongoDB (an outcome unknown) wait for cleanup;
            // those still queued behind them when their time ran out were never sent.
            let sent = try #require(try await harness.metric("background_writes_pending", #"queue="late_inserts""#))
            #expect(sent >= 1 && sent <= 20)
            harness.mongo.resume()
            let pending = try await retrying(for: .seconds(20)) {
                try await harness.metric("background_writes_pending", #"queue="late_inserts""#)
            } until: { $0 == 0 }
            #expect(pending == 0)
            let feed = try await harness.client.get("/v1/users/outage/notifications").jsonObject()
            #expect((feed["items"] as? [Any])?.count == 0, "nothing the clients were told failed is stored")
            #expect(try await harness.unreadCount("outage") == 0)
            let batches = harness.environment.store.counters.lateInsertBatches
            #expect(batches >= 2 && batches <= 8, "two confirmations of one batch, plus retries while MongoDB was frozen: \(batches)")
        }
    }

    /// Issue 17, item 11: an instance SIGKILLed during a MongoDB freeze, after answering 503 to a
    /// create, a read, a delete and a read-all it had sent (or was about to send), owes their
    /// repairs. Before the fix they lived in its memory and died with it: when MongoDB came back
    /// it applied the writes, nobody recounted, and the counter stayed wrong for good (the
    /// create stayed stored too). Now each write is announced on the counter before it is sent,
    /// and another instance's sweep resolves what nobody settled.
    @Test func repairsOwedByAnInstanceKilledDuringAnOutageAreMadeByAnother() async throws {
        try await withHarness(configure: { $0.feedCacheTTLSeconds = 3 }) { harness in
            let user = "owed"
            var created: [String] = []
            for _ in 0..<3 { created.append(try await harness.client.create(recipient: user)["id"] as? String ?? "") }
            let ids = created
            #expect(try await harness.unreadCount(user) == 3)
            let (instance, port) = try await EventCrashTests.startOwner(harness, overrides: ["MONGODB_OPERATION_TIMEOUT_MS": "1500"])
            defer {
                kill(instance.processIdentifier, SIGKILL)
                instance.waitUntilExit()
            }
            // Connected to MongoDB before it freezes (a first connection would fail before sending anything).
            #expect(try await Self.send(port: port, "GET", "/v1/users/\(user)/notifications") == 200)
            harness.mongo.pause()
            let statuses = try await withThrowingTaskGroup(of: Int.self) { group in
                group.addTask { try await Self.send(port: port, "POST", "/v1/notifications", body: #"{"recipientId": "owed", "type": "owed.create"}"#) }
                group.addTask { try await Self.send(port: port, "POST", "/v1/users/\(user)/notifications/\(ids[0])/read") }
                group.addTask { try await Self.send(port: port, "DELETE", "/v1/users/\(user)/notifications/\(ids[1])") }
                group.addTask { try await Self.send(port: port, "POST", "/v1/users/\(user)/notifications/read-all") }
                return try await group.reduce(into: [Int]()) { $0.append($1) }
            }
            #expect(statuses.allSatisfy { $0 == 503 }, "\(statuses)")
            kill(instance.processIdentifier, SIGKILL)
            instance.waitUntilExit()
            harness.mongo.resume()
            let resumed = ContinuousClock.now
            let notifications = harness.environment.mongoPool.collection("notifications")
            // The truth is what MongoDB holds, whatever it applied of what it had received.
            func truth() async throws -> Int { try await notifications.find(["recipientId": .string(user), "readAt": .null]).count }
            let converged = try await retrying(for: .seconds(15), every: .milliseconds(300)) {
                let count = try await harness.unreadCount(user)
                return (count, try await truth())
            } until: { $0.0 == $0.1 && ContinuousClock.now - resumed > harness.environment.store.counters.settle }
            #expect(converged.0 == converged.1, "the count converges to the stored truth")
            #expect(ContinuousClock.now - resumed < .seconds(15))
            #expect(try await notifications.find(["recipientId": .string(user), "type": "owed.create"]).isEmpty, "a create answered 503 is not stored")
            // Every announcement is resolved, and the counter itself reconciled.
            let counter = try await retrying(for: .seconds(20), every: .milliseconds(400)) {
                _ = try await harness.unreadCount(user)
                return try await Self.counter(harness, user)
            } until: { counter in
                (counter?["pending"]?.document?.fields.count ?? 0) == 0 && counter?["stale"]?.bool == false
            }
            #expect((counter?["pending"]?.document?.fields.count ?? 0) == 0 && counter?["inflight"]?.int64 == 0, "\(String(describing: counter))")
            #expect(counter?["stale"]?.bool == false)
            #expect(counter?["unread"]?.int64 == Int64(try await truth()))
        }
    }

    /// A request over a connection of its own; the answer's status (0 when none came).
    static func send(port: Int, _ method: String, _ path: String, body: String? = nil) async throws -> Int {
        var request = URLRequest(url: URL(string: "http://127.0.0.1:\(port)\(path)")!)
        request.httpMethod = method
        request.timeoutInterval = 30
        request.setValue("Bearer \(apiKey)", forHTTPHeaderField: "Authorization")
        if let body {
            request.setValue("application/json", forHTTPHeaderField: "Content-Type")
            request.httpBody = Data(body.utf8)
        }
        let (_, response) = try await URLSession.shared.data(for: request)
        return (response as? HTTPURLResponse)?.statusCode ?? 0
    }
}
