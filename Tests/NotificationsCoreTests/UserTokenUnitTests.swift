import Foundation
@testable import NotificationsCore
import Testing

@Suite("User tokens: minting, verifying, the request body, the settings")
struct UserTokenUnitTests {
    static let keys = [
        UserTokenKey(kid: "new", secret: "a-new-secret-that-is-32-bytes-long"), UserTokenKey(kid: "old", secret: "an-old-secret-that-is-32-bytes-lon"),
    ]

    @Test func mintedTokensVerifyWithEveryListedKeyAndExpire() async throws {
        let now = Timestamp(milliseconds: 1_800_000_000_500)
        let tokens = UserTokens(keys: Self.keys)
        let (token, expiresAt) = try await tokens.mint(userId: "alice", scopes: [.feedRead], ttlSeconds: 60, now: now)
        #expect(expiresAt == 1_800_000_060)
        let verified = try await tokens.verify(token, now: now).get()
        #expect(verified == UserToken(userId: "alice", scopes: [.feedRead], issuedAt: 1_800_000_000, expiresAt: 1_800_000_060))
        // The header names the signing key: a service that lists it second still verifies it.
        let rotated = UserTokens(keys: Self.keys.reversed())
        #expect(try await rotated.verify(token, now: now).get().userId == "alice")
        // A service without that key does not.
        let stranger = UserTokens(keys: [UserTokenKey(kid: "new", secret: "another-secret-that-is-32-bytes-long")])
        #expect(await stranger.verify(token, now: now) == .failure(.signature))
        #expect(await UserTokens(keys: [Self.keys[1]]).verify(token, now: now) == .failure(.unknownKey))
        // Expiry with the 30 s leeway, remembered or not.
        #expect(await tokens.verify(token, now: Timestamp(milliseconds: 1_800_000_089_000)) != .failure(.expired))
        #expect(await tokens.verify(token, now: Timestamp(milliseconds: 1_800_000_090_000)) == .failure(.expired))
        #expect(await rotated.verify(token, now: Timestamp(milliseconds: 1_800_000_091_000)) == .failure(.expired))
        #expect(await UserTokens(keys: []).verify(token, now: now) == .failure(.disabled))
    }

    @Test func timeChecksHaveThirtySecondsOfLeeway() {
        let token = UserToken(userId: "u", scopes: [], issuedAt: 1000, expiresAt: 2000, notBefore: 1500)
        func at(_ second: Int64) -> Result<UserToken, UserTokenRejection> { UserTokens.check(token, now: Timestamp(milliseconds: second * 1000)) }
        #expect(at(1469) == .failure(.notYetValid))
        #expect(at(1470) == .success(token))
        #expect(at(2029) == .success(token))
        #expect(at(2030) == .failure(.expired))
        let future = UserToken(userId: "u", scopes: [], issuedAt: 1031, expiresAt: 2000)
        #expect(UserTokens.check(future, now: Timestamp(milliseconds: 1_000_000)) == .failure(.notYetValid))
    }

    @Test func tokenRequestsAreValidated() throws {
        #expect(try TokenRequest(json: .object([:])) == TokenRequest())
        #expect(TokenRequest().scopes == Set(UserScope.allCases))
        let custom = try TokenRequest(json: .object(["ttlSeconds": .integer(86_400), "scopes": .array([.string("feed:read"), .string("feed:read")])]))
        #expect(custom == TokenRequest(ttlSeconds: 86_400, scopes: [.feedRead]))
        for (json, field) in [
            (JSONValue.object(["ttlSeconds": .integer(59)]), "ttlSeconds"), (.object(["ttlSeconds": .number(61.5)]), "ttlSeconds"),
            (.object(["scopes": .array([.string("admin")])]), "scopes[0]"), (.object(["scopes": .array([])]), "scopes"),
            (.object(["other": .null]), "other"), (.array([]), "$"), (.object(["scopes": .null]), "scopes"),
            (.object(["ttlSeconds": .null]), "ttlSeconds"),
        ] {
            #expect(throws: ValidationError.self) { try TokenRequest(json: json) }
            do {
                _ = try TokenRequest(json: json)
            } catch {
                #expect(error.field == field)
            }
        }
    }

    @Test func scopesParseLeniently() {
        #expect(UserScope.parse(claim: "feed:read  other preferences:write") == [.feedRead, .preferencesWrite])
        #expect(UserScope.parse(claim: nil).isEmpty)
        #expect(UserScope.claim([.preferencesWrite, .feedRead]) == "feed:read preferences:write")
    }

    @Test func revocationMessagesRoundTrip() {
        let message = StreamMessage.revoked(atSecond: 1_800_000_000)
        #expect(StreamMessage(payload: Array(message.payload.utf8)) == message)
        #expect(StreamMessage(payload: Array("r x".utf8)) == nil)
    }

    @Test func settingsNameWhatIsWrong() async throws {
        func load(_ environment: [String: String]) async throws(SettingsError) -> Settings {
            try await Settings.load(environment: environment) { _ in [] }
        }
        let settings = try await load([
            "USER_TOKEN_KEYS": "k1:\(Self.keys[0].secret),k0:\(Self.keys[1].secret)",
            "CORS_ALLOWED_ORIGINS": "https://app.example.com, http://localhost:3000", "DEMO_UI": "true",
        ])
        #expect(settings.userTokenKeys.map(\.kid) == ["k1", "k0"])
        #expect(settings.corsAllowedOrigins == ["https://app.example.com", "http://localhost:3000"])
        #expect(settings.demoUI)
        for (name, value) in [
            ("USER_TOKEN_KEYS", "k1:short"), ("USER_TOKEN_KEYS", "k1"), ("USER_TOKEN_KEYS", "k1:\(Self.keys[0].secret),k1:\(Self.keys[1].secret)"),
            ("CORS_ALLOWED_ORIGINS", "*"), ("CORS_ALLOWED_ORIGINS", "https://app.example.com/path"), ("CORS_ALLOWED_ORIGINS", "app.example.com"),
        ] {
            do {
                _ = try await load([name: value])
                Issue.record("\(name)=\(value) was accepted")
            } catch {
                #expect(error.variable == name)
            }
        }
        // The secrets never show in check-config.
        let shown = settings.effectiveValues.map(\.value).joined(separator: " ")
        #expect(!shown.contains(Self.keys[0].secret))
        #expect(shown.contains("k1:****"))
    }
}
