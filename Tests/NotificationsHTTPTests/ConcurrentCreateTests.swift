import Foundation
import HTTPTypes
import HummingbirdTesting
import NIOCore
import NotificationsCore
import Testing
import TestSupport

/// Group commit seen from outside: many creates at once, each answered on its own, nothing lost.
@Suite("Concurrent creates (group commit)")
struct ConcurrentCreateTests {
    @Test func concurrentCreatesAreEachAnsweredAndCountedExactly() async throws {
        try await withHarness { harness in
            _ = try await harness.client.create(recipient: "warm-up")
            let users = ["gc-a", "gc-b", "gc-c"]
            let ids = try await withThrowingTaskGroup(of: (String, String?).self) { group in
                for index in 0..<48 {
                    let user = users[index % users.count]
                    group.addTask {
                        let client = TestClient(host: "127.0.0.1", port: harness.client.port ?? 0)
                        client.connect()
                        defer { Task { try? await client.shutdown() } }
                        let body = #"{"recipientId":"\#(user)","type":"gc","title":"n\#(index)"}"#
                        let response = try await client.post("/v1/notifications", headers: jsonHeaders, body: ByteBuffer(string: body))
                        #expect(response.head.status == .created)
                        let json = try JSONSerialization.jsonObject(with: Data((response.body ?? ByteBuffer()).readableBytesView)) as? [String: Any]
                        #expect(json?["title"] as? String == "n\(index)", "each request gets its own notification back")
                        return (user, json?["id"] as? String)
                    }
                }
                var ids: [String: [String]] = [:]
                for try await (user, id) in group { if let id { ids[user, default: []].append(id) } }
                return ids
            }
            for user in users {
                #expect(ids[user]?.count == 16 && Set(ids[user] ?? []).count == 16)
                let feed = try await harness.client.get("/v1/users/\(user)/notifications?limit=100").jsonObject()
                #expect(feed["unreadCount"] as? Int == 16, "\(user)")
                let listed = Set((feed["items"] as? [[String: Any]] ?? []).compactMap { $0["id"] as? String })
                #expect(listed == Set(ids[user] ?? []), "\(user): every answered id is stored, nothing else")
            }
            #expect(try await harness.metric("notifications_created_total") == 49)
        }
    }
}
