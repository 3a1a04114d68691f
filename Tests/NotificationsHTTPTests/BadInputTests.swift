import Hummingbird
import HummingbirdTesting
import NIOCore
import Testing

/// Every endpoint, every kind of bad input: each gets the contract's 4xx problem+json (naming
/// the field where there is one), none a 500, and the server keeps answering.
@Suite("Bad input gets a clear problem, never a 500")
struct BadInputTests {
    struct Case: CustomStringConvertible, Sendable {
        var description: String
        var method: HTTPRequest.Method
        var uri: String
        var headers: HTTPFields = jsonHeaders
        var body: String?
        var status: Int
        var code: String
        /// Text the problem's `detail` must contain (the offending field).
        var detail: String?
    }

    static let id = "0123456789abcdef01234567"
    static let user = "/v1/users/alice/notifications"

    static let cases: [Case] = {
        var cases: [Case] = []
        func post(_ description: String, _ body: String?, _ status: Int, _ code: String, _ detail: String? = nil, headers: HTTPFields = jsonHeaders) {
            cases.append(Case(description: "POST /v1/notifications: \(description)", method: .post, uri: "/v1/notifications",
                              headers: headers, body: body, status: status, code: code, detail: detail))
        }
        post("invalid JSON", "{\"recipientId\":", 400, "malformed_json")
        post("not JSON at all", "hello", 400, "malformed_json")
        post("empty body", "", 400, "malformed_json")
        post("a JSON array", "[1,2]", 400, "validation_failed")
        post("a JSON string", "\"x\"", 400, "validation_failed")
        post("missing recipientId", #"{"type":"x"}"#, 400, "validation_failed", "recipientId")
        post("missing type", #"{"recipientId":"a"}"#, 400, "validation_failed", "type")
        post("extra field", #"{"recipientId":"a","type":"x","priority":1}"#, 400, "validation_failed", "priority")
        post("recipientId a number", #"{"recipientId":5,"type":"x"}"#, 400, "validation_failed", "recipientId")
        post("type an array", #"{"recipientId":"a","type":["x"]}"#, 400, "validation_failed", "type")
        post("title a bool", #"{"recipientId":"a","type":"x","title":true}"#, 400, "validation_failed", "title")
        post("data an array", #"{"recipientId":"a","type":"x","data":[1]}"#, 400, "validation_failed", "data")
        post("data a string", #"{"recipientId":"a","type":"x","data":"{}"}"#, 400, "validation_failed", "data")
        post("bad recipientId characters", #"{"recipientId":"al ice","type":"x"}"#, 400, "validation_failed", "recipientId")
        post("empty recipientId", #"{"recipientId":"","type":"x"}"#, 400, "validation_failed", "recipientId")
        post("recipientId of 129 characters", "{\"recipientId\":\"\(String(repeating: "a", count: 129))\",\"type\":\"x\"}", 400, "validation_failed", "recipientId")
        post("upper-case type", #"{"recipientId":"a","type":"Comment"}"#, 400, "validation_failed", "type")
        post("type of 65 characters", "{\"recipientId\":\"a\",\"type\":\"\(String(repeating: "t", count: 65))\"}", 400, "validation_failed", "type")
        post("bad actorId", #"{"recipientId":"a","type":"x","actorId":"b/c"}"#, 400, "validation_failed", "actorId")
        post("title of 201 characters", "{\"recipientId\":\"a\",\"type\":\"x\",\"title\":\"\(String(repeating: "é", count: 201))\"}", 400, "validation_failed", "title")
        post("body of 2001 characters", "{\"recipientId\":\"a\",\"type\":\"x\",\"body\":\"\(String(repeating: "b", count: 2001))\"}", 400, "validation_failed", "body")
        post("data over 16 KiB", "{\"recipientId\":\"a\",\"type\":\"x\",\"data\":{\"k\":\"\(String(repeating: "d", count: 16_400))\"}}", 400, "validation_failed", "data")
        post("body over 64 KiB", "{\"recipientId\":\"a\",\"type\":\"x\",\"body\":\"\(String(repeating: "b", count: 70_000))\"}", 413, "payload_too_large")
        post("text/plain", #"{"recipientId":"a","type":"x"}"#, 415, "unsupported_media_type", headers: [.authorization: "Bearer \(apiKey)", .contentType: "text/plain"])
        post("no content type", #"{"recipientId":"a","type":"x"}"#, 415, "unsupported_media_type", headers: [.authorization: "Bearer \(apiKey)"])
        post("form encoded", "recipientId=a&type=x", 415, "unsupported_media_type", headers: [.authorization: "Bearer \(apiKey)", .contentType: "application/x-www-form-urlencoded"])
        post("no bearer key", #"{"recipientId":"a","type":"x"}"#, 401, "unauthorized", headers: [.contentType: "application/json"])
        post("unknown bearer key", #"{"recipientId":"a","type":"x"}"#, 401, "unauthorized", headers: [.authorization: "Bearer nope", .contentType: "application/json"])
        post("basic auth", #"{"recipientId":"a","type":"x"}"#, 401, "unauthorized", headers: [.authorization: "Basic dGVzdDp0ZXN0", .contentType: "application/json"])
        post("deeply nested data", "{\"recipientId\":\"a\",\"type\":\"x\",\"data\":{\"k\":\(String(repeating: "[", count: 5000))\(String(repeating: "]", count: 5000))}}", 400, "malformed_json")

        func get(_ description: String, _ uri: String, _ status: Int, _ code: String, _ detail: String? = nil, headers: HTTPFields = authorized) {
            cases.append(Case(description: "GET \(uri): \(description)", method: .get, uri: uri, headers: headers, status: status, code: code, detail: detail))
        }
        for limit in ["0", "101", "-1", "abc", "1.5", ""] {
            get("limit \(limit)", "\(user)?limit=\(limit)", 400, "validation_failed", "limit")
        }
        get("garbage cursor", "\(user)?cursor=not-a-cursor", 400, "validation_failed", "cursor")
        get("cursor of the right length but not base64url", "\(user)?cursor=!!!!!!!!!!!!!!!!", 400, "validation_failed", "cursor")
        get("unreadOnly yes", "\(user)?unreadOnly=yes", 400, "validation_failed", "unreadOnly")
        get("bad userId", "/v1/users/al%20ice/notifications", 400, "validation_failed", "userId")
        get("userId of 129 characters", "/v1/users/\(String(repeating: "u", count: 129))/notifications", 400, "validation_failed", "userId")
        get("no bearer key", user, 401, "unauthorized", headers: [:])
        get("unread-count with bad userId", "/v1/users/a$b/notifications/unread-count", 400, "validation_failed", "userId")
        get("unread-count without a key", "/v1/users/alice/notifications/unread-count", 401, "unauthorized", headers: [:])

        func other(_ method: HTTPRequest.Method, _ description: String, _ uri: String, _ status: Int, _ code: String, _ detail: String? = nil, headers: HTTPFields = authorized) {
            cases.append(Case(description: "\(method) \(uri): \(description)", method: method, uri: uri, headers: headers, status: status, code: code, detail: detail))
        }
        other(.post, "id not hex", "\(user)/not-an-id/read", 400, "validation_failed", "id")
        other(.post, "id too short", "\(user)/abc123/read", 400, "validation_failed", "id")
        other(.post, "unknown id", "\(user)/\(id)/read", 404, "not_found")
        other(.post, "read without a key", "\(user)/\(id)/read", 401, "unauthorized", headers: [:])
        other(.post, "read-all with bad userId", "/v1/users/a%2Fb/notifications/read-all", 400, "validation_failed", "userId")
        other(.post, "read-all without a key", "\(user)/read-all", 401, "unauthorized", headers: [:])
        other(.delete, "unknown id", "\(user)/\(id)", 404, "not_found")
        other(.delete, "bad id", "\(user)/xyz", 400, "validation_failed", "id")
        other(.delete, "without a key", "\(user)/\(id)", 401, "unauthorized", headers: [:])
        other(.put, "wrong method", user, 405, "method_not_allowed")
        other(.delete, "read-all is not an id", "\(user)/read-all", 405, "method_not_allowed")
        other(.patch, "wrong method on notifications", "/v1/notifications", 405, "method_not_allowed")
        other(.get, "unknown path", "/v1/nothing-here", 404, "not_found")
        other(.get, "unknown top-level path", "/wp-admin", 404, "not_found")
        return cases
    }()

    @Test func everyBadRequestGetsItsProblem() async throws {
        try await withTestApp { client, _ in
            for testCase in Self.cases {
                let response = try await client.execute(
                    uri: testCase.uri, method: testCase.method, headers: testCase.headers, body: testCase.body.map { ByteBuffer(string: $0) })
                #expect(Int(response.status.code) == testCase.status, "\(testCase): \(response.text)")
                #expect(response.headers[.contentType] == "application/problem+json", "\(testCase)")
                let problem = try response.jsonObject()
                #expect(problem["code"] as? String == testCase.code, "\(testCase): \(response.text)")
                #expect(problem["status"] as? Int == testCase.status, "\(testCase)")
                #expect(problem["title"] is String && problem["type"] is String, "\(testCase)")
                if let field = testCase.detail {
                    #expect((problem["detail"] as? String)?.contains(field) == true, "\(testCase): \(response.text)")
                }
                if testCase.status == 405 { #expect(response.headers[.allow] != nil, "\(testCase)") }
                if testCase.uri.hasSuffix("/read-all") && testCase.status == 405 { #expect(response.headers[.allow] == "POST") }
                if testCase.status == 401 { #expect(response.headers[.wwwAuthenticate] == "Bearer", "\(testCase)") }
            }
            // Still up, and nothing was stored by any of it.
            #expect(try await client.get("/health/live", headers: [:]).status == .ok)
            let feed = try await client.get("/v1/users/a/notifications").jsonObject()
            #expect((feed["items"] as? [Any])?.isEmpty == true)
        }
    }

    @Test func secretsNeverAppearInErrors() async throws {
        try await withTestApp { client, _ in
            let response = try await client.post("/v1/notifications", json: "{", headers: [.authorization: "Bearer \(apiKey)x", .contentType: "application/json"])
            #expect(response.status == .unauthorized)
            #expect(!response.text.contains(apiKey))
        }
    }
}
