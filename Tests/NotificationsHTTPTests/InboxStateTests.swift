import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import MongoStore
@testable import NotificationsCore
import NotificationsHTTP
import Testing
import TestSupport

/// Inbox states (seen, read, archived) and the four counts (issue 18), against the real
/// servers: after every action the counts equal a recount of the stored documents.
@Suite("Inbox states and counts")
struct InboxStateTests {
    /// The user's counts as the stored documents say.
    static func truth(_ harness: Harness, _ user: String) async throws -> Counts {
        try await harness.environment.mongoPool.collection("notifications").find(["recipientId": .string(user)])
            .reduce(Counts()) { $0 + Counts.of(document: $1) }
    }

    static func counts(_ harness: Harness, _ user: String) async throws -> Counts {
        let response = try await harness.client.get("/v1/users/\(user)/notifications/counts")
        #expect(response.status == .ok)
        return try #require(Counts(json: Array(response.body.readableBytesView)))
    }

    static func act(_ harness: Harness, _ user: String, _ id: String, _ action: StateAction) async throws -> [String: Any] {
        let response = try await harness.client.execute(uri: "/v1/users/\(user)/notifications/\(id)/\(action.rawValue)", method: .post, headers: authorized)
        #expect(response.status == .ok, "\(action): \(response.text)")
        return try response.jsonObject()
    }

    @Test func everyActionLeavesTheStateAndTheFourCountsExact() async throws {
        try await withHarness { harness in
            let user = "states"
            var ids: [String] = []
            for index in 0..<5 { ids.append(try await harness.client.create(recipient: user, type: "t\(index)")["id"] as? String ?? "") }
            #expect(try await Self.counts(harness, user) == Counts(unread: 5, unseen: 5, total: 5))
            let steps: [(Int, StateAction)] = [
                (0, .seen), (0, .seen), (1, .read), (0, .read), (1, .unread), (1, .unread), (2, .archive), (2, .archive),
                (3, .read), (3, .archive), (3, .unarchive), (2, .read), (2, .unarchive), (4, .archive),
            ]
            for (index, action) in steps {
                let before = try await harness.environment.mongoPool.collection("notifications").findOne(["_id": .objectID(ObjectID(hex: ids[index])!)])
                let item = try await Self.act(harness, user, ids[index], action)
                switch action {
                case .seen: #expect(item["seenAt"] is String)
                case .read: #expect(item["readAt"] is String && item["seenAt"] is String, "read also sets seenAt")
                case .unread: #expect(item["readAt"] is NSNull && item["seenAt"] is String, "unread clears readAt only")
                case .archive: #expect(item["archivedAt"] is String)
                case .unarchive: #expect(item["archivedAt"] is NSNull)
                }
                if let old = before?[action == .seen ? "seenAt" : action == .read ? "readAt" : "archivedAt"]?.datetime, action != .unarchive {
                    // A repeat changes nothing and returns the same time.
                    let field = action == .seen ? "seenAt" : action == .read ? "readAt" : "archivedAt"
                    #expect(item[field] as? String == Timestamp(milliseconds: old).rfc3339, "\(action) repeated")
                }
                let truth = try await Self.truth(harness, user)
                #expect(try await Self.counts(harness, user) == truth, "after \(action) of #\(index)")
            }
            let feed = try await harness.client.get("/v1/users/\(user)/notifications").jsonObject()
            let truth = try await Self.truth(harness, user)
            #expect(feed["unreadCount"] as? Int == truth.unread && feed["unseenCount"] as? Int == truth.unseen && feed["totalCount"] as? Int == truth.total)
            #expect(truth == Counts(unread: 1, unseen: 0, total: 4, archived: 1), "\(truth)")
            // Deleting an archived one and a live one.
            #expect(try await harness.client.execute(uri: "/v1/users/\(user)/notifications/\(ids[4])", method: .delete, headers: authorized).status == .noContent)
            #expect(try await harness.client.execute(uri: "/v1/users/\(user)/notifications/\(ids[1])", method: .delete, headers: authorized).status == .noContent)
            #expect(try await Self.counts(harness, user) == Self.truth(harness, user))
            // Unknown or another user's: 404, nothing changed.
            let other = try await harness.client.execute(uri: "/v1/users/someone-else/notifications/\(ids[0])/archive", method: .post, headers: authorized)
            #expect(other.status == .notFound)
        }
    }

    @Test func readAllMarksTheNonArchivedReadAndSeen() async throws {
        try await withHarness { harness in
            let user = "read-all-states"
            var ids: [String] = []
            for _ in 0..<4 { ids.append(try await harness.client.create(recipient: user)["id"] as? String ?? "") }
            _ = try await Self.act(harness, user, ids[0], .archive)
            _ = try await Self.act(harness, user, ids[1], .seen)
            let response = try await harness.client.execute(uri: "/v1/users/\(user)/notifications/read-all", method: .post, headers: authorized)
            #expect(try response.jsonObject()["updated"] as? Int == 3)
            let truth = try await Self.truth(harness, user)
            #expect(truth == Counts(unread: 0, unseen: 0, total: 3, archived: 1))
            #expect(try await Self.counts(harness, user) == truth)
            let archived = try await harness.environment.mongoPool.collection("notifications").findOne(["_id": .objectID(ObjectID(hex: ids[0])!)])
            #expect(archived?["readAt"]?.isNull == true, "an archived one is not touched")
        }
    }

    /// A counter from before this version has `unread` only: it is recounted, then reconciled
    /// with all four counts.
    @Test func aCounterFromBeforeTheFourCountsIsRecountedAndReconciled() async throws {
        try await withHarness { harness in
            let user = "legacy-counter"
            let id = try await harness.client.create(recipient: user)["id"] as? String ?? ""
            _ = try await harness.client.create(recipient: user)
            _ = try await Self.act(harness, user, id, .seen)
            let counters = harness.environment.mongoPool.collection("user_counters")
            _ = try await counters.update(["_id": .string(user)], ["$unset": ["unseen": "", "total": "", "archived": ""], "$set": ["unread": .int64(7)]])
            await harness.environment.services.cache.invalidate(user: user)
            #expect(try await Self.counts(harness, user) == Counts(unread: 2, unseen: 1, total: 2))
            let reconciled = try await retrying(for: .seconds(15), every: .milliseconds(400)) {
                await harness.environment.services.cache.invalidate(user: user)
                _ = try await Self.counts(harness, user)
                return try await counters.findOne(["_id": .string(user)])
            } until: { $0?["total"] != nil && $0?["stale"]?.bool == false }
            #expect(Counts(document: reconciled) == Counts(unread: 2, unseen: 1, total: 2))
        }
    }

    @Test func theStreamSendsCountsOnConnectAndAfterEveryChange() async throws {
        try await withHarness { harness in
            let user = "counts-stream"
            let id = try await harness.client.create(recipient: user)["id"] as? String ?? ""
            let stream = try await StreamTests.open(harness, user)
            defer { stream.close() }
            #expect(try await stream.next() == SSEEvent(event: "unread-count", data: #"{"unreadCount":1}"#))
            #expect(try await stream.next() == SSEEvent(event: "counts", data: #"{"unreadCount":1,"unseenCount":1,"totalCount":1}"#))
            // Seen changes no unread count: only `counts`.
            _ = try await Self.act(harness, user, id, .seen)
            #expect(try await stream.next() == SSEEvent(event: "counts", data: #"{"unreadCount":1,"unseenCount":0,"totalCount":1}"#))
            _ = try await Self.act(harness, user, id, .archive)
            #expect(try await stream.next() == SSEEvent(event: "unread-count", data: #"{"unreadCount":0}"#))
            #expect(try await stream.next() == SSEEvent(event: "counts", data: #"{"unreadCount":0,"unseenCount":0,"totalCount":0}"#))
        }
    }
}
