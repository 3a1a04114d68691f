import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import MongoStore
@testable import NotificationsCore
import NotificationsHTTP
import Testing
import TestSupport

/// Feed filters `status`, `archived`, `type` (issue 18): each lists exactly what the stored
/// documents say, pages without duplicates or gaps while others write, and refuses bad values.
@Suite("Feed filters")
struct FeedFilterTests {
    /// What a filter should list, decided from the stored documents' fields (not by the code
    /// under test), newest first.
    static func expected(_ harness: Harness, _ user: String, status: String, archived: String, type: String?) async throws -> [String] {
        let documents = try await harness.environment.mongoPool.collection("notifications").find(["recipientId": .string(user)])
        func set(_ document: BSONDocument, _ field: String) -> Bool { !(document[field]?.isNull ?? true) }
        return documents.filter { document in
            let archivedOK = switch archived {
            case "exclude": !set(document, "archivedAt")
            case "only": set(document, "archivedAt")
            default: true
            }
            let statusOK = switch status {
            case "unread": !set(document, "readAt")
            case "read": set(document, "readAt")
            case "unseen": !set(document, "seenAt")
            case "seen": set(document, "seenAt")
            default: true
            }
            return archivedOK && statusOK && (type == nil || document["type"]?.string == type)
        }
        .compactMap { $0["_id"]?.objectID?.description }.sorted(by: >)
    }

    /// Every page of a filtered feed, followed by its cursors.
    static func allPages(_ harness: Harness, _ user: String, query: String, limit: Int) async throws -> [String] {
        var ids: [String] = []
        var cursor: String?
        repeat {
            let path = "/v1/users/\(user)/notifications?limit=\(limit)&\(query)" + (cursor.map { "&cursor=\($0)" } ?? "")
            let response = try await harness.client.get(path)
            #expect(response.status == .ok, "\(path): \(response.text)")
            let page = try response.jsonObject()
            ids += (page["items"] as? [[String: Any]] ?? []).compactMap { $0["id"] as? String }
            cursor = page["nextCursor"] as? String
        } while cursor != nil
        return ids
    }

    @Test func everyFilterListsExactlyWhatTheStoredStatesSay() async throws {
        try await withHarness { harness in
            let user = "filtered"
            var ids: [String] = []
            for index in 0..<14 { ids.append(try await harness.client.create(recipient: user, type: index % 3 == 0 ? "alpha" : "beta")["id"] as? String ?? "") }
            for (index, action) in [(0, "seen"), (1, "read"), (2, "archive"), (3, "read"), (3, "archive"), (4, "seen"), (4, "archive"), (5, "read"),
                                    (5, "unread"), (6, "read"), (9, "archive"), (12, "seen")] {
                let response = try await InboxStateTests.post(harness, "/v1/users/\(user)/notifications/\(ids[index])/\(action)", nil)
                #expect(response.status == .ok)
            }
            for status in FeedFilter.Status.allCases.map(\.rawValue) {
                for archived in FeedFilter.Archived.allCases.map(\.rawValue) {
                    for type in [nil, "alpha"] {
                        let query = "status=\(status)&archived=\(archived)" + (type.map { "&type=\($0)" } ?? "")
                        let want = try await Self.expected(harness, user, status: status, archived: archived, type: type)
                        #expect(try await Self.allPages(harness, user, query: query, limit: 3) == want, "\(query)")
                    }
                }
            }
            // The defaults: status=all, archived=exclude; unreadOnly=true is status=unread.
            let inbox = try await Self.expected(harness, user, status: "all", archived: "exclude", type: nil)
            #expect(try await Self.allPages(harness, user, query: "", limit: 5) == inbox)
            let unread = try await Self.expected(harness, user, status: "unread", archived: "exclude", type: nil)
            #expect(try await Self.allPages(harness, user, query: "unreadOnly=true", limit: 5) == unread)
            #expect(try await Self.allPages(harness, user, query: "unreadOnly=true&status=unread", limit: 5) == unread)
            // Counts on every page are the user's, whatever the filter.
            let page = try await harness.client.get("/v1/users/\(user)/notifications?archived=only&type=alpha").jsonObject()
            let truth = try await InboxStateTests.truth(harness, user)
            #expect(page["unreadCount"] as? Int == truth.unread && page["unseenCount"] as? Int == truth.unseen && page["totalCount"] as? Int == truth.total)
        }
    }

    @Test func aCachedFilteredPageFollowsEveryStateChange() async throws {
        try await withHarness { harness in
            let user = "filter-cache"
            var ids: [String] = []
            for _ in 0..<3 { ids.append(try await harness.client.create(recipient: user)["id"] as? String ?? "") }
            let unread = "/v1/users/\(user)/notifications?status=unread"
            _ = try await harness.client.get(unread)
            #expect(try await harness.client.get(unread).headers[CacheAndLockTests.xCache] == "hit")
            #expect(try await InboxStateTests.post(harness, "/v1/users/\(user)/notifications/\(ids[1])/read", nil).status == .ok)
            let after = try await harness.client.get(unread)
            #expect(after.headers[CacheAndLockTests.xCache] == "miss")
            #expect((try after.jsonObject()["items"] as? [[String: Any]])?.compactMap { $0["id"] as? String } == [ids[2], ids[0]])
            #expect(try await InboxStateTests.post(harness, "/v1/users/\(user)/notifications/\(ids[0])/archive", nil).status == .ok)
            #expect(try await Self.allPages(harness, user, query: "archived=only", limit: 2) == [ids[0]])
            #expect(try await Self.allPages(harness, user, query: "status=unread", limit: 2) == [ids[2]])
        }
    }

    /// While one client pages through a filter and others create and change states: no item
    /// twice, and every item that matched the filter throughout (and existed when paging
    /// began) is listed.
    @Test(arguments: ["status=unread", "status=unseen&archived=include", "archived=only", "type=beta"])
    func pagingUnderAFilterHasNoDuplicatesAndNoGapsWhileOthersWrite(query: String) async throws {
        try await withHarness { harness in
            let user = "filter-paging"
            var created: [String] = []
            for index in 0..<40 {
                created.append(try await harness.client.create(recipient: user, type: index % 2 == 0 ? "alpha" : "beta")["id"] as? String ?? "")
            }
            let ids = created
            let archivedIDs = ids.enumerated().filter { $0.offset % 3 == 0 }.map { "\"\($0.element)\"" }.joined(separator: ",")
            let setUp = try await InboxStateTests.post(
                harness, "/v1/users/\(user)/notifications/batch", #"{"action": "archive", "ids": [\#(archivedIDs)]}"#)
            #expect(setUp.status == .ok)
            let parts = query.split(separator: "&").reduce(into: [String: String]()) { $0[String($1.split(separator: "=")[0])] = String($1.split(separator: "=")[1]) }
            let before = Set(try await Self.expected(harness, user, status: parts["status"] ?? "all", archived: parts["archived"] ?? "exclude", type: parts["type"]))
            // Items the writer below changes, which may or may not be listed.
            let touched = Set(ids.enumerated().filter { $0.offset % 5 == 1 }.map(\.element))
            let feed = harness.environment.services.feed
            let listed = try await withThrowingTaskGroup(of: [String]?.self) { group in
                group.addTask {
                    for (index, id) in ids.enumerated() where index % 5 == 1 {
                        let action: StateAction = [.read, .seen, .archive, .unarchive][index % 4]
                        _ = try await feed.setState(action, userId: user, id: id)
                        _ = try await feed.create(NewNotification(recipientId: user, type: "beta"))
                    }
                    return nil
                }
                group.addTask { try await Self.allPages(harness, user, query: query, limit: 3) }
                var listed: [String] = []
                for try await result in group { if let result { listed = result } }
                return listed
            }
            #expect(Set(listed).count == listed.count, "no duplicates under \(query)")
            let missing = before.subtracting(touched).subtracting(listed)
            #expect(missing.isEmpty, "no gaps under \(query): \(missing.count) missing")
            #expect(listed == listed.sorted(by: >), "newest first")
        }
    }

    /// Notifications stored before the state class existed are listed under the filters once
    /// `create-indexes` (also run at start-up) has given them one.
    @Test func notificationsStoredBeforeFiltersGetTheirStateClass() async throws {
        try await withHarness { harness in
            let user = "legacy-filter"
            let collection = harness.environment.mongoPool.collection("notifications")
            let read = try await harness.client.create(recipient: user)["id"] as? String ?? ""
            let unread = try await harness.client.create(recipient: user)["id"] as? String ?? ""
            // As an older version stored them: no `sc`, no seenAt or archivedAt fields.
            _ = try await collection.update(["recipientId": .string(user)], ["$unset": ["sc": "", "seenAt": "", "archivedAt": ""]], multi: true)
            _ = try await collection.update(["_id": .objectID(ObjectID(hex: read)!)], ["$set": ["readAt": .datetime(1_700_000_000_000)]])
            _ = try await harness.environment.mongoPool.collection("migrations").delete(["_id": "state_class"], limit: 0)
            try await harness.environment.createIndexes()
            #expect(try await Self.allPages(harness, user, query: "status=read", limit: 5) == [read])
            #expect(try await Self.allPages(harness, user, query: "status=unread", limit: 5) == [unread])
            #expect(try await Self.allPages(harness, user, query: "", limit: 5) == [unread, read])
        }
    }

    @Test func badFilterValuesAre400NamingTheField() async throws {
        try await withHarness { harness in
            let user = "/v1/users/bad-filter/notifications"
            for (query, field) in [
                ("status=new", "status"), ("archived=yes", "archived"), ("type=Not%20A%20Type", "type"),
                ("unreadOnly=true&status=read", "unreadOnly"), ("unreadOnly=true&status=all", "unreadOnly"), ("status=", "status"),
            ] {
                let response = try await harness.client.get("\(user)?\(query)")
                try expectValidationProblem(response, field: field)
            }
            #expect(try await harness.client.get("\(user)?unreadOnly=false&status=read").status == .ok)
        }
    }
}
