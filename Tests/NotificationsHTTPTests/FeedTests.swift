import Foundation
import Hummingbird
import HummingbirdTesting
import NIOCore
import Testing
import TestSupport

@Suite("The notifications feed over a real MongoDB-wire server")
struct FeedTests {
    @Test func createReturns201WithLocationAndTheContractShape() async throws {
        try await withTestApp { client, _ in
            let response = try await client.post(
                "/v1/notifications",
                json: #"{"recipientId":"alice","type":"comment.created","actorId":"bob","title":"Hi \"there\"","body":"line\nbreak","data":{"postId":"p1","n":[1,2.5,true,null],"big":9007199254740993}}"#)
            #expect(response.status == .created)
            let created = try response.jsonObject()
            let id = try #require(created["id"] as? String)
            #expect(id.count == 24 && id.allSatisfy(\.isHexDigit))
            #expect(response.headers[.location] == "/v1/users/alice/notifications/\(id)")
            #expect(created["recipientId"] as? String == "alice")
            #expect(created["actorId"] as? String == "bob")
            #expect(created["title"] as? String == "Hi \"there\"")
            #expect(created["body"] as? String == "line\nbreak")
            #expect(created["readAt"] is NSNull)
            #expect(response.text.contains("\"big\":9007199254740993"), "integers in data stay exact")
            let createdAt = try #require(created["createdAt"] as? String)
            #expect(createdAt.wholeMatch(of: /\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z/) != nil, "\(createdAt)")
            let minimal = try await client.post("/v1/notifications", json: #"{"recipientId":"alice","type":"x"}"#).jsonObject()
            #expect(minimal["actorId"] is NSNull && minimal["title"] is NSNull && minimal["body"] is NSNull)
            #expect(minimal["data"] as? [String: Any] != nil)
        }
    }

    @Test func pagingWhileNewNotificationsArriveHasNoDuplicatesOrGaps() async throws {
        try await withTestApp { client, _ in
            var existing: [String] = []
            for index in 0..<12 { existing.append(try await client.create(recipient: "pager", title: "n\(index)")["id"] as! String) }
            var seen: [String] = []
            var cursor: String?
            repeat {
                let query = cursor.map { "&cursor=\($0)" } ?? ""
                let page = try await client.get("/v1/users/pager/notifications?limit=5\(query)").jsonObject()
                seen += (page["items"] as! [[String: Any]]).map { $0["id"] as! String }
                cursor = page["nextCursor"] as? String
                // New notifications arrive between pages: they must not shift later pages.
                _ = try await client.create(recipient: "pager", title: "late")
            } while cursor != nil
            #expect(seen == existing.reversed(), "newest first, each exactly once")
        }
    }

    @Test func readUnreadCountsReadAllAndDelete() async throws {
        try await withTestApp { client, _ in
            var ids: [String] = []
            for _ in 0..<4 { ids.append(try await client.create(recipient: "reader")["id"] as! String) }
            _ = try await client.create(recipient: "someone-else")
            #expect(try await client.get("/v1/users/reader/notifications/unread-count").jsonObject()["unreadCount"] as? Int == 4)

            let read = try await client.execute(uri: "/v1/users/reader/notifications/\(ids[0])/read", method: .post, headers: authorized)
            #expect(read.status == .ok)
            let readAt = try read.jsonObject()["readAt"] as? String
            #expect(readAt != nil)
            // Idempotent: same readAt, count unchanged.
            let again = try await client.execute(uri: "/v1/users/reader/notifications/\(ids[0])/read", method: .post, headers: authorized)
            #expect(try again.jsonObject()["readAt"] as? String == readAt)
            #expect(try await client.get("/v1/users/reader/notifications/unread-count").jsonObject()["unreadCount"] as? Int == 3)

            // Another user's notification is not found, and stays unread.
            let foreign = try await client.execute(uri: "/v1/users/someone-else/notifications/\(ids[1])/read", method: .post, headers: authorized)
            #expect(foreign.status == .notFound)

            let unreadOnly = try await client.get("/v1/users/reader/notifications?unreadOnly=true").jsonObject()
            #expect((unreadOnly["items"] as! [[String: Any]]).map { $0["id"] as! String } == ids[1...].reversed())
            #expect(unreadOnly["unreadCount"] as? Int == 3)

            // Deleting an unread one lowers the count; a second delete is 404; so is another user's.
            #expect(try await client.execute(uri: "/v1/users/someone-else/notifications/\(ids[1])", method: .delete, headers: authorized).status == .notFound)
            #expect(try await client.execute(uri: "/v1/users/reader/notifications/\(ids[1])", method: .delete, headers: authorized).status == .noContent)
            #expect(try await client.execute(uri: "/v1/users/reader/notifications/\(ids[1])", method: .delete, headers: authorized).status == .notFound)
            let afterDelete = try await client.get("/v1/users/reader/notifications").jsonObject()
            #expect(!(afterDelete["items"] as! [[String: Any]]).contains { $0["id"] as? String == ids[1] })
            #expect(afterDelete["unreadCount"] as? Int == 2)

            let all = try await client.execute(uri: "/v1/users/reader/notifications/read-all", method: .post, headers: authorized)
            #expect(try all.jsonObject()["updated"] as? Int == 2)
            let allAgain = try await client.execute(uri: "/v1/users/reader/notifications/read-all", method: .post, headers: authorized)
            #expect(try allAgain.jsonObject()["updated"] as? Int == 0)
            #expect(try await client.get("/v1/users/reader/notifications/unread-count").jsonObject()["unreadCount"] as? Int == 0)
            #expect(try await client.get("/v1/users/someone-else/notifications/unread-count").jsonObject()["unreadCount"] as? Int == 1)
        }
    }

    @Test func percentEncodedUserIDsAreDecoded() async throws {
        try await withTestApp { client, _ in
            _ = try await client.create(recipient: "user:1@example")
            let feed = try await client.get("/v1/users/user%3A1%40example/notifications").jsonObject()
            #expect((feed["items"] as? [Any])?.count == 1)
            #expect(try await client.get("/v1/users/user%ZZ/notifications").status == .badRequest)
        }
    }

    @Test func emptyFeedsAreFine() async throws {
        try await withTestApp { client, _ in
            let response = try await client.get("/v1/users/nobody/notifications")
            #expect(response.status == .ok)
            #expect(response.text == #"{"items":[],"nextCursor":null,"unreadCount":0,"unseenCount":0,"totalCount":0}"#)
            #expect(try await client.get("/v1/users/nobody/notifications?cursor=").status == .ok, "an empty cursor is the first page")
        }
    }

    @Test func mongoDownGives503StorageUnavailableAndHealthSaysSo() async throws {
        try await withTestApp { client, mongo in
            #expect(try await client.get("/health/ready", headers: [:]).status == .ok)
            mongo.kill()
            let create = try await client.post("/v1/notifications", json: #"{"recipientId":"a","type":"x"}"#)
            #expect(create.status == .serviceUnavailable)
            #expect(try create.jsonObject()["code"] as? String == "storage_unavailable")
            #expect(!create.text.contains("mongo"), "no driver messages in responses: \(create.text)")
            #expect(try await client.get("/v1/users/a/notifications").status == .serviceUnavailable)
            let health = try await client.get("/health", headers: [:])
            #expect(health.status == .serviceUnavailable)
            #expect(try health.jsonObject()["status"] as? String == "unhealthy")
            #expect(try await client.get("/health/ready", headers: [:]).status == .serviceUnavailable)
            #expect(try await client.get("/health/live", headers: [:]).status == .ok)
        }
    }
}
