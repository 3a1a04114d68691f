import Foundation
import FoundationNetworking
import HTTPTypes
import Hummingbird
import InMemoryLogging
import Logging
import HummingbirdTesting
import MongoStore
@testable import NotificationsCore
import NotificationsHTTP
import Testing
import TestSupport

/// `seen-all`, `read-all`, `archive-all` past `BULK_SYNC_LIMIT` (issue 18): 202 and an operation
/// that completes in the background, resumed by another instance when its owner dies, with
/// the exact `updated` and exact counts.
@Suite("All-at-once operations in the background")
struct AllAtOnceTests {
    /// `count` unread, unseen notifications for a new `user`, stored directly (in commands of
    /// 500) with the counter they make, the newest a millisecond before now.
    static func seed(_ harness: Harness, _ user: String, count: Int, type: String = "bulk") async throws -> [String] {
        let now = SystemWallClock().now()
        let notifications = (0..<count).map { index in
            let time = now.advanced(by: .milliseconds(-(count - index)))
            return Notification(
                id: ObjectIDs.new(at: time), recipientId: user, type: type, actorId: nil, title: "n\(index)", body: nil, dataJSON: "{}",
                createdAt: time, readAt: nil)
        }
        let collection = harness.environment.mongoPool.collection("notifications")
        // In commands of 200, each tried again when it times out (a busy machine runs the whole
        // suite at once): a document already stored is reported as a duplicate, not thrown.
        for start in stride(from: 0, to: notifications.count, by: 200) {
            let chunk = notifications[start..<min(start + 200, notifications.count)].map(MongoNotificationStore.document)
            _ = try await retryingOnTimeout { try await collection.insert(chunk) }
        }
        // The counter as the writes would have left it (a fresh user): no recount of thousands
        // on the first read, which a busy test machine may not finish within the deadline.
        var counter: BSONDocument = ["_id": .string(user), "seq": .int64(1)]
        for (field, value) in Counts.created(count).document.fields { counter[field] = value }
        try await retryingOnTimeout {
            do {
                try await harness.environment.mongoPool.collection("user_counters").insertOne(counter)
            } catch MongoError.duplicateKey {
                // Stored by an earlier try whose answer was lost.
            }
        }
        await harness.environment.services.cache.invalidate(user: user)
        return notifications.map(\.id)
    }

    /// `body`, tried up to ten times while MongoDB does not answer within the deadline.
    static func retryingOnTimeout<T>(_ body: () async throws -> T) async throws -> T {
        for _ in 0..<9 {
            do {
                return try await body()
            } catch let error as MongoError where error.isUnavailable {
                try await Task.sleep(for: .milliseconds(200))
            }
        }
        return try await body()
    }

    static func operation(_ harness: Harness, _ user: String, _ id: String) async throws -> (HTTPResponse.Status, [String: Any]) {
        let response = try await harness.client.get("/v1/users/\(user)/notifications/operations/\(id)")
        return (response.status, response.status == .ok ? try response.jsonObject() : [:])
    }

    @Test func aLargeReadAllGoesToTheBackgroundAndReportsTheExactCount() async throws {
        try await withHarness(configure: { $0.bulkSyncLimit = 50 }) { harness in
            let user = "many-unread"
            _ = try await Self.seed(harness, user, count: 1200)
            #expect(try await InboxStateTests.counts(harness, user) == Counts(unread: 1200, unseen: 1200, total: 1200))
            let response = try await InboxStateTests.post(harness, "/v1/users/\(user)/notifications/read-all", nil)
            #expect(response.status == .accepted, "\(response.text)")
            let accepted = try response.jsonObject()
            let id = try #require(accepted["operationId"] as? String)
            #expect(accepted["status"] as? String == "in_progress" && accepted["updated"] is Int)
            #expect(response.headers[.location] == "/v1/users/\(user)/notifications/operations/\(id)")
            // Created after the request: not touched.
            let later = try await harness.client.create(recipient: user)["id"] as? String ?? ""
            let done = try await retrying(for: .seconds(120), every: .milliseconds(300)) { try await Self.operation(harness, user, id) } until: {
                $0.1["status"] as? String == "completed"
            }
            #expect(done.0 == .ok)
            #expect(done.1["updated"] as? Int == 1200 && done.1["action"] as? String == "read-all" && done.1["operationId"] as? String == id)
            let truth = try await InboxStateTests.truth(harness, user)
            #expect(truth == Counts(unread: 1, unseen: 1, total: 1201))
            #expect(try await InboxStateTests.counts(harness, user) == truth)
            let item = try await harness.client.get("/v1/users/\(user)/notifications?limit=1").jsonObject()
            #expect((item["items"] as? [[String: Any]])?.first?["id"] as? String == later)
            // Another user's, unknown, malformed.
            #expect(try await Self.operation(harness, "someone-else", id).0 == .notFound)
            #expect(try await Self.operation(harness, user, "0123456789abcdef01234567").0 == .notFound)
            try expectValidationProblem(try await harness.client.get("/v1/users/\(user)/notifications/operations/nope"), field: "operationId")
            // Nothing left to change: within the request again.
            let again = try await InboxStateTests.post(harness, "/v1/users/\(user)/notifications/read-all", nil)
            #expect(again.status == .ok)
            #expect(try again.jsonObject()["updated"] as? Int == 1)
        }
    }

    /// The instance running a background `seen-all` is SIGKILLed in the middle of a batch;
    /// another instance takes the operation over after its lease, runs the interrupted batch
    /// again over the same range and finishes. `updated` counts each notification once (read
    /// from the marks the batch's runs left), and the counts converge.
    @Test func anotherInstanceFinishesABackgroundOperationWhoseOwnerWasKilled() async throws {
        try await withHarness(configure: {
            $0.eventFanoutLeaseMilliseconds = 2000
            $0.mongoOperationTimeoutMilliseconds = 5000
        }) { harness in
            let user = "killed-mid-seen-all"
            _ = try await Self.seed(harness, user, count: 2100)
            let (owner, port) = try await EventCrashTests.startOwner(
                harness, overrides: ["BULK_SYNC_LIMIT": "100", "EVENT_FANOUT_LEASE_MS": "2000", "MONGODB_OPERATION_TIMEOUT_MS": "5000"])
            defer {
                kill(owner.processIdentifier, SIGKILL)
                owner.waitUntilExit()
            }
            var request = URLRequest(url: URL(string: "http://127.0.0.1:\(port)/v1/users/\(user)/notifications/seen-all")!)
            request.httpMethod = "POST"
            request.timeoutInterval = 60
            request.setValue("Bearer \(apiKey)", forHTTPHeaderField: "Authorization")
            let (data, response) = try await URLSession.shared.data(for: request)
            #expect((response as? HTTPURLResponse)?.statusCode == 202)
            let id = try #require((try JSONSerialization.jsonObject(with: data) as? [String: Any])?["operationId"] as? String)
            // Killed once its second batch is in flight (its range fixed in the record).
            let operations = harness.environment.mongoPool.collection("bulk_operations")
            _ = try await retrying(for: .seconds(60), every: .milliseconds(20)) { try await operations.findOne(["_id": .string(id)]) } until: {
                ($0?["batch"]?.int64 ?? 0) >= 1 && !($0?["batchEnd"]?.isNull ?? true)
            }
            kill(owner.processIdentifier, SIGKILL)
            let killedAt = try await operations.findOne(["_id": .string(id)])
            #expect(killedAt?["status"]?.string == "in_progress")
            let done = try await retrying(for: .seconds(120), every: .milliseconds(300)) { try await Self.operation(harness, user, id) } until: {
                $0.1["status"] as? String == "completed"
            }
            #expect(done.1["updated"] as? Int == 2100, "each notification counted once: \(done.1)")
            let truth = try await InboxStateTests.truth(harness, user)
            #expect(truth == Counts(unread: 2100, unseen: 0, total: 2100))
            let counts = try await retrying(for: .seconds(15), every: .milliseconds(300)) { try await InboxStateTests.counts(harness, user) } until: {
                $0 == truth
            }
            #expect(counts == truth)
            #expect(harness.logs.entries.contains { $0.message.description == "Resuming a bulk operation whose owner stopped" })
        }
    }
}
