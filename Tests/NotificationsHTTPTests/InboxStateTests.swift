import Foundation
import NIOCore
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

    static func post(_ harness: Harness, _ path: String, _ json: String?) async throws -> TestResponse {
        try await harness.client.execute(
            uri: path, method: .post, headers: json == nil ? authorized : jsonHeaders, body: json.map { ByteBuffer(string: $0) })
    }

    @Test func aBatchByIdsChangesOnlyThoseAndKeepsTheCountsExact() async throws {
        try await withHarness { harness in
            let user = "batcher"
            var ids: [String] = []
            for _ in 0..<6 { ids.append(try await harness.client.create(recipient: user)["id"] as? String ?? "") }
            let stranger = try await harness.client.create(recipient: "stranger")["id"] as? String ?? ""
            let path = "/v1/users/\(user)/notifications/batch"
            func batch(_ action: String, _ chosen: [String]) async throws -> Int? {
                let list = chosen.map { "\"\($0)\"" }.joined(separator: ",")
                let response = try await Self.post(harness, path, #"{"action": "\#(action)", "ids": [\#(list)]}"#)
                #expect(response.status == .ok, "\(response.text)")
                return try response.jsonObject()["updated"] as? Int
            }
            // Unknown ids and another user's are skipped.
            #expect(try await batch("archive", [ids[0], ids[1], "0123456789abcdef01234567", stranger]) == 2)
            #expect(try await batch("archive", [ids[0]]) == 0, "a repeat changes nothing")
            #expect(try await batch("read", [ids[1], ids[2]]) == 2, "an archived one can be read too")
            #expect(try await Self.counts(harness, user) == Self.truth(harness, user))
            #expect(try await batch("unarchive", [ids[1]]) == 1)
            #expect(try await batch("seen", ids) == 4, "the unseen ones: \(ids.count) minus the two read")
            #expect(try await batch("unread", [ids[1], ids[2], ids[3]]) == 2)
            #expect(try await batch("delete", [ids[0], ids[4], stranger]) == 2)
            let truth = try await Self.truth(harness, user)
            #expect(truth == Counts(unread: 4, unseen: 0, total: 4, archived: 0), "\(truth)")
            #expect(try await Self.counts(harness, user) == truth)
            #expect(try await Self.truth(harness, "stranger") == Counts(unread: 1, unseen: 1, total: 1), "another user's is untouched")
        }
    }

    @Test func seenAllReadAllAndArchiveAllTakeTheirFilters() async throws {
        try await withHarness { harness in
            let user = "filters"
            for type in ["like", "like", "comment"] { _ = try await harness.client.create(recipient: user, type: type) }
            try await Task.sleep(for: .milliseconds(20))
            let middle = Timestamp(milliseconds: Int64(Date().timeIntervalSince1970 * 1000)).rfc3339
            try await Task.sleep(for: .milliseconds(20))
            _ = try await harness.client.create(recipient: user, type: "like")
            let base = "/v1/users/\(user)/notifications"
            #expect(try await Self.post(harness, "\(base)/seen-all", #"{"type": "like"}"#).jsonObject()["updated"] as? Int == 3)
            #expect(try await Self.post(harness, "\(base)/read-all", #"{"before": "\#(middle)"}"#).jsonObject()["updated"] as? Int == 3)
            #expect(try await Self.post(harness, "\(base)/archive-all", #"{"type": "comment", "before": "\#(middle)"}"#).jsonObject()["updated"] as? Int == 1)
            let truth = try await Self.truth(harness, user)
            #expect(truth == Counts(unread: 1, unseen: 0, total: 3, archived: 1), "\(truth)")
            #expect(try await Self.counts(harness, user) == truth)
            // A time before any id, or far ahead, is a filter like any other (not a crash).
            #expect(try await Self.post(harness, "\(base)/seen-all", #"{"before": "1900-01-01T00:00:00Z"}"#).jsonObject()["updated"] as? Int == 0)
            #expect(try await Self.post(harness, "\(base)/read-all", #"{"before": "9999-12-31T23:59:59Z"}"#).jsonObject()["updated"] as? Int == 1)
            // No body: everything non-archived.
            #expect(try await Self.post(harness, "\(base)/archive-all", nil).jsonObject()["updated"] as? Int == 3)
            #expect(try await Self.counts(harness, user) == Self.truth(harness, user))
            #expect(try await Self.counts(harness, user) == Counts(archived: 4))
        }
    }

    @Test func badBulkInputIs400NamingTheFieldAndChangesNothing() async throws {
        try await withHarness { harness in
            let user = "bad-bulk"
            let id = try await harness.client.create(recipient: user)["id"] as? String ?? ""
            let base = "/v1/users/\(user)/notifications"
            let many = (0..<1001).map { _ in "\"\(id)\"" }.joined(separator: ",")
            let cases: [(String, String, String)] = [
                ("batch", #"{"action": "explode", "ids": ["\#(id)"]}"#, "action"),
                ("batch", #"{"action": "read"}"#, "ids"),
                ("batch", #"{"action": "read", "ids": []}"#, "ids"),
                ("batch", #"{"action": "read", "ids": [\#(many)]}"#, "ids"),
                ("batch", #"{"action": "read", "ids": ["not-an-id"]}"#, "ids[0]"),
                ("batch", #"{"action": "read", "ids": ["\#(id)"], "extra": 1}"#, "extra"),
                ("seen-all", #"{"typ": "like"}"#, "typ"),
                ("read-all", #"{"before": "yesterday"}"#, "before"),
                ("archive-all", #"{"type": ""}"#, "type"),
            ]
            for (route, body, field) in cases {
                try expectValidationProblem(try await Self.post(harness, "\(base)/\(route)", body), field: field)
            }
            #expect(try await Self.truth(harness, user) == Counts(unread: 1, unseen: 1, total: 1), "nothing changed")
        }
    }
}
