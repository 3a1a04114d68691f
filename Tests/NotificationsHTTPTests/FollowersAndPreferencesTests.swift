import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import NotificationsCore
import NotificationsHTTP
import Testing
import TestSupport

@Suite("Followers and preferences")
struct FollowersAndPreferencesTests {
    static func put(_ client: any TestClientProtocol, _ uri: String, json: String? = nil) async throws -> TestResponse {
        try await client.execute(uri: uri, method: .put, headers: jsonHeaders, body: json.map { ByteBuffer(string: $0) })
    }

    static func followers(_ client: any TestClientProtocol, _ user: String, limit: Int, cursor: String?) async throws -> ([String], String?) {
        let query = "limit=\(limit)" + (cursor.map { "&cursor=\($0)" } ?? "")
        let page = try await client.get("/v1/users/\(user)/followers?\(query)").jsonObject()
        return (page["items"] as? [String] ?? [], page["nextCursor"] as? String)
    }

    @Test func followIsIdempotentAndPagesHaveNoDuplicatesOrGapsWhileFollowersArrive() async throws {
        try await withHarness { harness in
            let client = harness.client
            for follower in ["f3", "f1", "f5", "f1"] {
                #expect(try await Self.put(client, "/v1/users/star/followers/\(follower)").status == .noContent)
            }
            let selfFollow = try await Self.put(client, "/v1/users/star/followers/star")
            #expect(selfFollow.status == .badRequest)
            #expect(try selfFollow.jsonObject()["code"] as? String == "validation_failed")
            var (items, cursor) = try await Self.followers(client, "star", limit: 2, cursor: nil)
            #expect(items == ["f1", "f3"])
            // New followers arrive while paging: one before the cursor, one after.
            #expect(try await Self.put(client, "/v1/users/star/followers/f0").status == .noContent)
            #expect(try await Self.put(client, "/v1/users/star/followers/f4").status == .noContent)
            (items, cursor) = try await Self.followers(client, "star", limit: 2, cursor: cursor)
            #expect(items == ["f4", "f5"])
            #expect(cursor == nil, "the last page")
            #expect(try await client.execute(uri: "/v1/users/star/followers/f3", method: .delete, headers: authorized).status == .noContent)
            #expect(try await client.execute(uri: "/v1/users/star/followers/f3", method: .delete, headers: authorized).status == .noContent)
            #expect(try await Self.followers(client, "star", limit: 100, cursor: nil).0 == ["f0", "f1", "f4", "f5"])
            // A cursor is a position: any base64url text up to 172 characters (as the API document says).
            for bad in ["%25%25%25", "ZjE=", "ZjE.", String(repeating: "A", count: 173)] {
                #expect(try await client.get("/v1/users/star/followers?cursor=\(bad)").status == .badRequest, "\(bad)")
            }
            // "ZjE" is base64url for "f1": the followers after f1.
            #expect(try await Self.followers(client, "star", limit: 100, cursor: "ZjE").0 == ["f4", "f5"])
            #expect(try await client.get("/v1/users/star/followers?cursor=\(String(repeating: "_", count: 172))").status == .ok)
        }
    }

    @Test func preferencesDefaultThenStoredAndMutingSuppressesCreates() async throws {
        try await withHarness { harness in
            let client = harness.client
            let defaults = try await client.get("/v1/users/quiet/preferences").jsonObject()
            #expect(defaults["mutedTypes"] as? [String] == [])
            #expect(defaults["channels"] as? [String: Bool] == ["in_app": true, "email": true, "push": true])
            #expect(defaults["updatedAt"] is NSNull)
            let stored = try await Self.put(
                client, "/v1/users/quiet/preferences", json: #"{"mutedTypes": ["x.y", "z", "x.y"], "channels": {"email": false}}"#)
            #expect(stored.status == .ok)
            let body = try stored.jsonObject()
            #expect(body["mutedTypes"] as? [String] == ["x.y", "z"])
            #expect(body["channels"] as? [String: Bool] == ["in_app": true, "email": false, "push": true])
            #expect(body["updatedAt"] is String)
            // The mute holds at once (the cached default was dropped by the PUT).
            let muted = try await client.post("/v1/notifications", json: #"{"recipientId":"quiet","type":"x.y"}"#)
            #expect(muted.status == .accepted)
            #expect(try muted.jsonObject() as NSDictionary == ["status": "suppressed", "reason": "muted_type"])
            #expect(try await client.post("/v1/notifications", json: #"{"recipientId":"quiet","type":"other"}"#).status == .created)
            _ = try await Self.put(client, "/v1/users/quiet/preferences", json: #"{"mutedTypes": ["x.y"], "channels": {"in_app": false}}"#)
            let off = try await client.post("/v1/notifications", json: #"{"recipientId":"quiet","type":"x.y"}"#)
            #expect(try off.jsonObject() as NSDictionary == ["status": "suppressed", "reason": "in_app_disabled"])
            #expect(try await harness.unreadCount("quiet") == 1, "nothing suppressed was stored")
            // Another instance sees the mute too (Redis or MongoDB, never a stale default).
            try await harness.withOtherInstance { other in
                guard case .suppressed(.inAppDisabled) = try await other.services.feed.deliver(NewNotification(recipientId: "quiet", type: "any")) else {
                    Issue.record("another instance delivered to a user with in_app off")
                    return
                }
            }
        }
    }

    @Test(arguments: [
        (#"{"mutedTypes": "x"}"#, "mutedTypes"), (#"{"mutedTypes": [1]}"#, "mutedTypes[0]"), (#"{"mutedTypes": ["Bad Type"]}"#, "mutedTypes[0]"),
        (#"{"channels": {"sms": true}}"#, "channels.sms"), (#"{"channels": {"email": "no"}}"#, "channels.email"),
        (#"{"channels": []}"#, "channels"), (#"{"color": "blue"}"#, "color"),
    ])
    func badPreferencesAre400NamingTheField(json: String, field: String) async throws {
        try await withHarness { harness in
            try expectValidationProblem(try await Self.put(harness.client, "/v1/users/u/preferences", json: json), field: field)
        }
    }

    @Test func moreThanAHundredDistinctMutedTypesIs400() async throws {
        try await withHarness { harness in
            let many = (0...100).map { "\"t\($0)\"" }.joined(separator: ",")
            let response = try await Self.put(harness.client, "/v1/users/u/preferences", json: "{\"mutedTypes\": [\(many)]}")
            #expect(response.status == .badRequest)
            #expect((try response.jsonObject()["detail"] as? String)?.hasPrefix("mutedTypes:") == true)
            let repeated = (0..<300).map { "\"t\($0 % 100)\"" }.joined(separator: ",")
            #expect(try await Self.put(harness.client, "/v1/users/u/preferences", json: "{\"mutedTypes\": [\(repeated)]}").status == .ok)
        }
    }
}
