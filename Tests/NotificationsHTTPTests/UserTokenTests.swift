import Crypto
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import InMemoryLogging
import NotificationsCore
import NotificationsHTTP
import Testing
import TestSupport

/// Two keys: tokens are signed with the first, verified with either (rotation).
private let firstKey = UserTokenKey(kid: "k2026", secret: "first-user-token-secret-of-32-bytes!")
private let secondKey = UserTokenKey(kid: "k2025", secret: "second-user-token-secret-32-bytes!!")

private func withTokens(_ extra: @escaping (inout Settings) -> Void = { _ in }, _ test: @Sendable (Harness) async throws -> Void) async throws {
    try await withHarness(configure: { settings in
        settings.userTokenKeys = [firstKey, secondKey]
        extra(&settings)
    }, test)
}

private func bearer(_ token: String) -> HTTPFields { [.authorization: "Bearer \(token)", .contentType: "application/json"] }

/// Mints a token through the API (with the API key).
private func mint(_ harness: Harness, _ user: String, body: String = "{}") async throws -> String {
    let response = try await harness.client.post("/v1/users/\(user)/tokens", json: body)
    #expect(response.status == .created, "\(response.text)")
    return try #require(try response.jsonObject()["token"] as? String)
}

/// Tokens as a hostile client would make them: any header, any claims, signed with any key.
enum TokenForge {
    static func base64URL(_ bytes: some Sequence<UInt8>) -> String {
        Data(bytes).base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    static func json(_ object: [String: Any]) -> String {
        base64URL(try! JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]))
    }

    static func now() -> Int { Int(Date().timeIntervalSince1970) }

    static func claims(sub: String = "alice", iat: Int? = nil, exp: Int? = nil) -> [String: Any] {
        let now = now()
        return ["sub": sub, "iat": iat ?? now, "exp": exp ?? now + 600, "aud": "notifications", "scope": "feed:read feed:write preferences:write"]
    }

    enum Signature { case hs256(String), hs512(String), none }

    static func token(header: [String: Any] = ["alg": "HS256", "typ": "JWT", "kid": firstKey.kid], claims: [String: Any] = claims(),
                      signature: Signature = .hs256(firstKey.secret)) -> String {
        let input = json(header) + "." + json(claims)
        switch signature {
        case .hs256(let secret):
            return input + "." + base64URL(HMAC<SHA256>.authenticationCode(for: Data(input.utf8), using: SymmetricKey(data: Data(secret.utf8))))
        case .hs512(let secret):
            return input + "." + base64URL(HMAC<SHA512>.authenticationCode(for: Data(input.utf8), using: SymmetricKey(data: Data(secret.utf8))))
        case .none:
            return input + "."
        }
    }
}

@Suite("User tokens: scoped, expiring, revocable, rate limited per user")
struct UserTokenTests {
    @Test func aMintedTokenOpensItsOwnInboxAndNothingElse() async throws {
        try await withTokens { harness in
            let client = harness.client
            let response = try await client.post("/v1/users/alice/tokens", json: "")
            #expect(response.status == .created)
            #expect(response.headers[.cacheControl] == "no-store")
            let body = try response.jsonObject()
            #expect(body["scopes"] as? [String] == ["feed:read", "feed:write", "preferences:write"])
            let expiresAt = try #require(body["expiresAt"] as? String)
            let expires = try #require(ISO8601DateFormatter.withMilliseconds.date(from: expiresAt))
            #expect(abs(expires.timeIntervalSinceNow - 3600) < 5)
            let token = try #require(body["token"] as? String)
            _ = try await client.create(recipient: "alice")

            // Its own routes, by scope.
            #expect(try await client.get("/v1/users/alice/notifications", headers: bearer(token)).status == .ok)
            #expect(try await client.get("/v1/users/alice/notifications/counts", headers: bearer(token)).status == .ok)
            #expect(try await client.post("/v1/users/alice/notifications/seen-all", json: "", headers: bearer(token)).status == .ok)
            #expect(try await client.get("/v1/users/alice/preferences", headers: bearer(token)).status == .ok)
            // Another user's, and the backend's routes: 403.
            #expect(try await client.get("/v1/users/bob/notifications", headers: bearer(token)).status == .forbidden)
            #expect(try await client.post("/v1/notifications", json: #"{"recipientId":"alice","type":"x"}"#, headers: bearer(token)).status == .forbidden)
            #expect(try await client.post("/v1/events", json: #"{"eventId":"e1","type":"x","actorId":"alice","audience":{"followersOf":"alice"}}"#, headers: bearer(token)).status == .forbidden)
            #expect(try await client.get("/v1/users/alice/followers", headers: bearer(token)).status == .forbidden)
            #expect(try await client.post("/v1/users/alice/tokens", json: "{}", headers: bearer(token)).status == .forbidden)
            #expect(try await client.post("/v1/users/alice/tokens/revoke", json: "", headers: bearer(token)).status == .forbidden)

            // A read-only token: reads yes, writes no.
            let reader = try await mint(harness, "alice", body: #"{"scopes":["feed:read"],"ttlSeconds":60}"#)
            #expect(try await client.get("/v1/users/alice/notifications/unread-count", headers: bearer(reader)).status == .ok)
            let refused = try await client.post("/v1/users/alice/notifications/read-all", json: "", headers: bearer(reader))
            #expect(refused.status == .forbidden)
            #expect(try refused.jsonObject()["code"] as? String == "forbidden")
            let put = try await client.execute(
                uri: "/v1/users/alice/preferences", method: .put, headers: bearer(reader),
                body: ByteBuffer(string: #"{"mutedTypes":[],"channels":{"in_app":true,"email":true,"push":true}}"#))
            #expect(put.status == .forbidden)

            // Bad mint bodies name their field; nothing is minted.
            for (json, field) in [
                (#"{"ttlSeconds":59}"#, "ttlSeconds"), (#"{"ttlSeconds":86401}"#, "ttlSeconds"), (#"{"ttlSeconds":"60"}"#, "ttlSeconds"),
                (#"{"ttlSeconds":60.5}"#, "ttlSeconds"), (#"{"scopes":["admin"]}"#, "scopes[0]"), (#"{"scopes":[]}"#, "scopes"),
                (#"{"scopes":"feed:read"}"#, "scopes"), (#"{"ttl":60}"#, "ttl"),
            ] {
                let bad = try await client.post("/v1/users/alice/tokens", json: json)
                #expect(bad.status == .badRequest, "\(json)")
                #expect((try bad.jsonObject()["detail"] as? String)?.contains(field) == true, "\(json): \(bad.text)")
            }
            // No CORS configured: no CORS headers, whatever the origin.
            let plain = try await client.get("/v1/users/alice/notifications", headers: [.authorization: "Bearer \(token)", .origin: "https://app.example.com"])
            #expect(plain.headers[.accessControlAllowOrigin] == nil)
        }
    }

    @Test func withoutKeysThereAreNoUserTokens() async throws {
        try await withHarness { harness in
            let response = try await harness.client.post("/v1/users/alice/tokens", json: "{}")
            #expect(response.status == .notFound)
            #expect(try await harness.client.post("/v1/users/alice/tokens/revoke", json: "").status == .notFound)
            let forged = TokenForge.token()
            #expect(try await harness.client.get("/v1/users/alice/notifications", headers: bearer(forged)).status == .unauthorized)
        }
    }

    @Test func hostileTokensAreRefusedWithInvalidToken() async throws {
        try await withTokens { harness in
            let now = TokenForge.now()
            var missing: [(String, String)] = []
            for claim in ["sub", "iat", "exp", "aud"] {
                var claims = TokenForge.claims()
                claims[claim] = nil
                missing.append(("missing \(claim)", TokenForge.token(claims: claims)))
            }
            let valid = TokenForge.token()
            var wrongAudience = TokenForge.claims()
            wrongAudience["aud"] = "billing"
            var futureNotBefore = TokenForge.claims()
            futureNotBefore["nbf"] = now + 60
            let cases: [(String, String)] = [
                ("expired beyond the leeway", TokenForge.token(claims: TokenForge.claims(iat: now - 3600, exp: now - 31))),
                ("iat in the future", TokenForge.token(claims: TokenForge.claims(iat: now + 60))),
                ("nbf in the future", TokenForge.token(claims: futureNotBefore)),
                ("signed with another secret", TokenForge.token(signature: .hs256("an-attacker-secret-of-at-least-32-bytes"))),
                ("unknown kid", TokenForge.token(header: ["alg": "HS256", "kid": "stolen"])),
                ("no kid", TokenForge.token(header: ["alg": "HS256"])),
                ("wrong aud", TokenForge.token(claims: wrongAudience)),
                ("alg none", TokenForge.token(header: ["alg": "none", "kid": firstKey.kid], signature: .none)),
                ("alg HS512, signed HS512", TokenForge.token(header: ["alg": "HS512", "kid": firstKey.kid], signature: .hs512(firstKey.secret))),
                ("alg HS512, signed HS256", TokenForge.token(header: ["alg": "HS512", "kid": firstKey.kid])),
                ("alg RS256", TokenForge.token(header: ["alg": "RS256", "kid": firstKey.kid])),
                ("cut", String(valid.dropLast(6))),
                ("padded", valid + "=="),
                ("extra part", valid + ".abc"),
                ("not JSON", "abc.def.ghi"),
                ("bad user id", TokenForge.token(claims: TokenForge.claims(sub: "a b"))),
            ] + missing
            for (name, token) in cases {
                let response = try await harness.client.get("/v1/users/alice/notifications", headers: bearer(token))
                #expect(response.status == .unauthorized, "\(name)")
                #expect(response.headers[.wwwAuthenticate] == #"Bearer error="invalid_token""#, "\(name)")
                #expect(try response.jsonObject()["code"] as? String == "unauthorized", "\(name)")
                #expect(!response.text.contains(token), "\(name): the token is echoed")
            }
            // Within the 30 s leeway, and signed with the second key (rotation): accepted.
            let lenient = TokenForge.token(claims: TokenForge.claims(iat: now + 20, exp: now - 20))
            #expect(try await harness.client.get("/v1/users/alice/notifications", headers: bearer(lenient)).status == .ok)
            let rotated = TokenForge.token(header: ["alg": "HS256", "kid": secondKey.kid], signature: .hs256(secondKey.secret))
            #expect(try await harness.client.get("/v1/users/alice/notifications", headers: bearer(rotated)).status == .ok)
            // A token in the query of a route other than the stream: 401, even a valid one.
            let query = try await harness.client.get("/v1/users/alice/notifications?access_token=\(valid)", headers: [:])
            #expect(query.status == .unauthorized)
            #expect(!query.text.contains(valid))
            // No token reached a log line.
            let logged = harness.logs.entries.map { "\($0.message) \($0.metadata)" }.joined(separator: "\n")
            for (_, token) in cases + [("valid", valid), ("lenient", lenient)] { #expect(!logged.contains(token)) }
        }
    }

    @Test func theStreamTakesAQueryTokenAndRevocationEndsIt() async throws {
        try await withTokens({ $0.streamHeartbeatSeconds = 1 }) { harness in
            let token = try await mint(harness, "alice")
            let stream = try await SSEClient.open(
                port: harness.client.port ?? 0, path: "/v1/users/alice/notifications/stream?access_token=\(token)", headers: [])
            defer { stream.close() }
            #expect(stream.status == 200)
            #expect(try await stream.next()?.event == "unread-count")
            // Another user's stream with this token: 403.
            let other = try await SSEClient.open(
                port: harness.client.port ?? 0, path: "/v1/users/bob/notifications/stream?access_token=\(token)", headers: [])
            #expect(other.status == 403)
            other.close()

            let revoked = try await harness.client.post("/v1/users/alice/tokens/revoke", json: "")
            #expect(revoked.status == .noContent)
            #expect(try await retrying(for: .seconds(5), every: .milliseconds(50)) { stream.ended } until: { $0 })
            let refused = try await harness.client.get("/v1/users/alice/notifications", headers: bearer(token))
            #expect(refused.status == .unauthorized)
            #expect(refused.headers[.wwwAuthenticate] == #"Bearer error="invalid_token""#)
            // Tokens issued after the revocation's second work.
            let second = Date().timeIntervalSince1970.rounded(.down)
            try await Task.sleep(for: .milliseconds(Int64((second + 1 - Date().timeIntervalSince1970) * 1000) + 50))
            let fresh = try await mint(harness, "alice")
            #expect(try await harness.client.get("/v1/users/alice/notifications", headers: bearer(fresh)).status == .ok)
            // The revocation is stored in MongoDB: with Redis gone, it still holds.
            harness.redis.kill()
            #expect(try await harness.client.get("/v1/users/alice/notifications", headers: bearer(token)).status == .unauthorized)
        }
    }

    /// Another instance refuses a revoked token within 5 s while Redis is up, within 30 s while
    /// it is down (the revocation is then only in MongoDB).
    @Test func anotherInstanceHonoursARevocationWithinItsBound() async throws {
        try await withTokens { harness in
            try await harness.withOtherInstance { other in
                func refusedOnOther(_ token: String, within bound: Duration) async throws -> Duration {
                    let verified = try await other.services.tokens.verify(token, now: SystemWallClock().now()).get()
                    let start = ContinuousClock.now
                    let revoked = try await retrying(for: bound + .seconds(2), every: .milliseconds(100)) {
                        try await other.services.revocations.isRevoked(verified)
                    } until: { $0 }
                    #expect(revoked)
                    return ContinuousClock.now - start
                }
                let token = try await mint(harness, "alice")
                // The other instance has read (and keeps) "not revoked".
                let verified = try await other.services.tokens.verify(token, now: SystemWallClock().now()).get()
                #expect(try await other.services.revocations.isRevoked(verified) == false)
                #expect(try await harness.client.post("/v1/users/alice/tokens/revoke", json: "").status == .noContent)
                let withRedis = try await refusedOnOther(token, within: .seconds(5))
                #expect(withRedis <= .seconds(5), "\(withRedis)")

                // Redis gone: a token of a later second, known good on the other instance, revoked.
                try await Task.sleep(for: .milliseconds(1100))
                let later = try await mint(harness, "alice")
                let laterVerified = try await other.services.tokens.verify(later, now: SystemWallClock().now()).get()
                #expect(try await other.services.revocations.isRevoked(laterVerified) == false)
                harness.redis.kill()
                #expect(try await harness.client.post("/v1/users/alice/tokens/revoke", json: "").status == .noContent)
                let withoutRedis = try await refusedOnOther(later, within: .seconds(30))
                #expect(withoutRedis <= .seconds(30), "\(withoutRedis)")
            }
        }
    }

    @Test func userTokensAreLimitedPerUserAndRefusalsCount() async throws {
        try await withTokens({ settings in
            settings.rateLimitPolicies = [RateLimitPolicy(name: "*", limit: 10_000, windowMilliseconds: 1000),
                                          RateLimitPolicy(name: "user", limit: 3, windowMilliseconds: 60_000)]
        }) { harness in
            let alice = try await mint(harness, "alice")
            let alsoAlice = try await mint(harness, "alice", body: #"{"scopes":["feed:read"]}"#)
            let bob = try await mint(harness, "bob")
            let first = try await harness.client.get("/v1/users/alice/notifications", headers: bearer(alice))
            #expect(first.status == .ok)
            #expect(first.headers[HTTPField.Name("RateLimit-Policy")!]?.hasPrefix("\"user\";q=3") == true)
            // A 403 counts, and so does another token of the same user.
            #expect(try await harness.client.get("/v1/users/bob/notifications", headers: bearer(alice)).status == .forbidden)
            #expect(try await harness.client.get("/v1/users/alice/notifications", headers: bearer(alsoAlice)).status == .ok)
            let limited = try await harness.client.get("/v1/users/alice/notifications", headers: bearer(alice))
            #expect(limited.status == .tooManyRequests)
            #expect(limited.headers[.retryAfter] != nil)
            // Another user, and the backend's key, have their own buckets.
            #expect(try await harness.client.get("/v1/users/bob/notifications", headers: bearer(bob)).status == .ok)
            #expect(try await harness.client.get("/v1/users/alice/notifications").status == .ok)
        }
    }

    @Test func theDemoServesTheClientAndTokensToLoopbackOnly() async throws {
        try await withHarness { harness in
            let status = try await harness.client.get("/demo/", headers: [:]).status
            #expect(status == .notFound)
        }
        try await withTokens({ $0.demoUI = true }) { harness in
            let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            let page = try await harness.client.get("/demo/", headers: [:])
            #expect(page.status == .ok && page.headers[.contentType]?.hasPrefix("text/html") == true)
            let html = try String(contentsOf: root.appendingPathComponent("clients/js/demo.html"), encoding: .utf8)
            #expect(page.text == html.trimmingCharacters(in: .newlines), "run scripts/embed-demo after editing clients/js/")
            let module = try await harness.client.get("/demo/notifications.js", headers: [:])
            #expect(module.headers[.contentType]?.hasPrefix("text/javascript") == true)
            let js = try String(contentsOf: root.appendingPathComponent("clients/js/notifications.js"), encoding: .utf8)
            #expect(module.text == js.trimmingCharacters(in: .newlines), "run scripts/embed-demo after editing clients/js/")
            #expect(try await harness.client.get("/demo?userId=bob", headers: [:]).headers[.location] == "/demo/?userId=bob")

            let minted = try await harness.client.get("/demo/token?userId=alice", headers: [:])
            #expect(minted.status == .ok)
            let token = try #require(try minted.jsonObject()["token"] as? String)
            #expect(try await harness.client.get("/v1/users/alice/notifications", headers: bearer(token)).status == .ok)
            #expect(try await harness.client.get("/demo/token?userId=a%20b", headers: [:]).status == .badRequest)
            // Through a proxy, even one on this host: refused.
            let proxied = try await harness.client.get("/demo/token?userId=alice", headers: [HTTPField.Name("X-Forwarded-For")!: "203.0.113.9"])
            #expect(proxied.status == .forbidden)
        }
    }

    @Test func corsAnswersListedOriginsOnly() async throws {
        let origin = "https://app.example.com"
        try await withTokens({ settings in
            settings.corsAllowedOrigins = [origin]
            settings.rateLimitPolicies = [RateLimitPolicy(name: "*", limit: 10_000, windowMilliseconds: 1000),
                                          RateLimitPolicy(name: "user", limit: 2, windowMilliseconds: 60_000)]
        }) { harness in
            let client = harness.client
            let token = try await mint(harness, "alice")
            func check(_ response: TestResponse, _ name: String) {
                #expect(response.headers[.accessControlAllowOrigin] == origin, "\(name)")
                #expect(response.headers[.vary] == "Origin", "\(name)")
                let exposed = response.headers[.accessControlExposeHeaders] ?? ""
                for header in ["X-RateLimit-Remaining", "RateLimit", "Retry-After", "X-Request-Id", "X-Cache", "Location"] {
                    #expect(exposed.contains(header), "\(name): \(header)")
                }
                #expect(response.headers[HTTPField.Name("Access-Control-Allow-Credentials")!] == nil, "\(name)")
            }
            var headers = bearer(token)
            headers[.origin] = origin
            check(try await client.get("/v1/users/alice/notifications", headers: headers), "success")
            check(try await client.get("/v1/users/alice/notifications", headers: [.origin: origin]), "401")
            _ = try await client.get("/v1/users/alice/notifications", headers: headers)
            let limited = try await client.get("/v1/users/alice/notifications", headers: headers)
            #expect(limited.status == .tooManyRequests)
            check(limited, "429")

            for requestHeaders in ["authorization, content-type", nil] {
                var preflight: HTTPFields = [.origin: origin, .accessControlRequestMethod: "POST"]
                if let requestHeaders { preflight[HTTPField.Name("Access-Control-Request-Headers")!] = requestHeaders }
                let answer = try await client.execute(uri: "/v1/users/alice/notifications/read-all", method: .options, headers: preflight)
                #expect(answer.status == .noContent)
                #expect(answer.headers[.accessControlAllowOrigin] == origin)
                #expect(answer.headers[.accessControlAllowMethods]?.contains("POST") == true)
                for header in ["Authorization", "Content-Type", "Idempotency-Key", "Last-Event-ID"] {
                    #expect(answer.headers[.accessControlAllowHeaders]?.contains(header) == true)
                }
                #expect(answer.headers[.accessControlMaxAge] != nil)
            }
            // Another origin: no CORS headers; its preflight is 403.
            var foreign = bearer(token)
            foreign[.origin] = "https://evil.example.com"
            let other = try await client.get("/v1/users/bob/notifications", headers: [.authorization: "Bearer \(apiKey)", .origin: "https://evil.example.com"])
            #expect(other.status == .ok)
            #expect(other.headers[.accessControlAllowOrigin] == nil)
            #expect(other.headers[.vary] == nil)
            let refused = try await client.execute(
                uri: "/v1/users/alice/notifications", method: .options, headers: [.origin: "https://evil.example.com", .accessControlRequestMethod: "GET"])
            #expect(refused.status == .forbidden)
            #expect(refused.headers[.accessControlAllowOrigin] == nil)
        }
    }
}

extension ISO8601DateFormatter {
    static var withMilliseconds: ISO8601DateFormatter {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter
    }
}

extension HTTPField.Name {
    static let accessControlAllowOrigin = HTTPField.Name("Access-Control-Allow-Origin")!
    static let accessControlExposeHeaders = HTTPField.Name("Access-Control-Expose-Headers")!
    static let accessControlRequestMethod = HTTPField.Name("Access-Control-Request-Method")!
    static let accessControlAllowMethods = HTTPField.Name("Access-Control-Allow-Methods")!
    static let accessControlAllowHeaders = HTTPField.Name("Access-Control-Allow-Headers")!
    static let accessControlMaxAge = HTTPField.Name("Access-Control-Max-Age")!
}
