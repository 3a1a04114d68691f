import Foundation
import HTTPTypes
import Logging
import NIOPosix
import RedisClient
import NotificationsHTTP
import Hummingbird
import HummingbirdTesting
import NotificationsCore
import Testing

@Suite("Rate limiting with a healthy Redis")
struct RateLimitTests {
    static func header(_ response: TestResponse, _ name: String) -> String? {
        response.headers[HTTPField.Name(name)!]
    }

    @Test func burstThen429WithTheDraftHeadersOnEveryResponse() async throws {
        try await withHarness(configure: { $0.rateLimitPolicies = [RateLimitPolicy(name: "*", limit: 5, windowMilliseconds: 10_000)] }) { harness async throws in
            for remaining in stride(from: 4, through: 0, by: -1) {
                let response = try await harness.client.get("/v1/users/u/notifications")
                #expect(response.status == .ok)
                #expect(Self.header(response, "RateLimit-Policy") == #""default";q=5;w=10"#)
                #expect(Self.header(response, "RateLimit")?.hasPrefix(#""default";r=\#(remaining);t="#) == true, "\(response.headers)")
                #expect(Self.header(response, "X-RateLimit-Limit") == "5")
                #expect(Self.header(response, "X-RateLimit-Remaining") == String(remaining))
                #expect(Self.header(response, "X-RateLimit-Status") == "enforced")
                let reset = Int(Self.header(response, "X-RateLimit-Reset") ?? "") ?? -1
                #expect((1...10).contains(reset))
            }
            let limited = try await harness.client.get("/v1/users/u/notifications")
            #expect(limited.status == .tooManyRequests)
            #expect(try limited.jsonObject()["code"] as? String == "rate_limited")
            #expect(limited.headers[.contentType] == "application/problem+json")
            // One request per 2 s refills: the next one passes in 2 s.
            #expect(limited.headers[.retryAfter] == "2")
            #expect(Self.header(limited, "X-RateLimit-Remaining") == "0")
            #expect(Self.header(limited, "X-RateLimit-Reset") == "10")
        }
    }

    @Test func errorsCarryTheHeadersButUnauthenticatedRequestsDoNot() async throws {
        try await withHarness { harness async throws in
            let notFound = try await harness.client.execute(
                uri: "/v1/users/u/notifications/0123456789abcdef01234567", method: .delete, headers: authorized)
            #expect(notFound.status == .notFound)
            #expect(Self.header(notFound, "RateLimit") != nil && Self.header(notFound, "X-RateLimit-Status") == "enforced")
            let invalid = try await harness.client.get("/v1/users/u/notifications?limit=0")
            #expect(invalid.status == .badRequest)
            #expect(Self.header(invalid, "X-RateLimit-Limit") != nil)
            let unauthorized = try await harness.client.get("/v1/users/u/notifications", headers: [:])
            #expect(unauthorized.status == .unauthorized)
            #expect(Self.header(unauthorized, "RateLimit") == nil && Self.header(unauthorized, "X-RateLimit-Limit") == nil)
        }
    }

    @Test func policiesPerKeyUnlimitedKeysAndRouteGroups() async throws {
        try await withHarness(configure: {
            $0.rateLimitPolicies = [
                RateLimitPolicy(name: "*", limit: 2, windowMilliseconds: 60_000), RateLimitPolicy(name: "other", limit: nil, windowMilliseconds: 1000),
            ]
            $0.routeGroupPolicies = [.write: [RateLimitPolicy(name: "*", limit: 1, windowMilliseconds: 60_000)]]
        }) { harness async throws in
            // The write group has its own bucket and policy.
            let write = try await harness.client.post("/v1/notifications", json: #"{"recipientId":"u","type":"x"}"#)
            #expect(write.status == .created)
            #expect(Self.header(write, "RateLimit-Policy") == #""write-default";q=1;w=60"#)
            #expect(try await harness.client.post("/v1/notifications", json: #"{"recipientId":"u","type":"x"}"#).status == .tooManyRequests)
            // Reads still have the global policy's budget.
            #expect(try await harness.client.get("/v1/users/u/notifications").status == .ok)
            #expect(try await harness.client.get("/v1/users/u/notifications").status == .ok)
            #expect(try await harness.client.get("/v1/users/u/notifications").status == .tooManyRequests)
            // An unlimited key is never limited.
            for _ in 0..<10 {
                let response = try await harness.client.get("/v1/users/u/notifications", headers: [.authorization: "Bearer other-secret"])
                #expect(response.status == .ok)
                #expect(Self.header(response, "X-RateLimit-Status") == "unlimited")
            }
        }
    }

    @Test func healthMetricsAndAdminAreNeverRateLimited() async throws {
        try await withHarness(configure: { $0.rateLimitPolicies = [RateLimitPolicy(name: "*", limit: 1, windowMilliseconds: 3_600_000)] }) { harness async throws in
            for _ in 0..<20 {
                #expect(try await harness.client.get("/health", headers: [:]).status == .ok)
                #expect(try await harness.client.get("/health/ready", headers: [:]).status == .ok)
                #expect(try await harness.client.get("/metrics", headers: [:]).status == .ok)
                #expect(try await harness.client.get("/admin/circuit-breakers", headers: [:]).status == .ok)
            }
        }
    }

    @Test func theLimitIsGlobalAcrossInstancesSharingRedis() async throws {
        try await withHarness(configure: { $0.rateLimitPolicies = [RateLimitPolicy(name: "*", limit: 6, windowMilliseconds: 60_000)] }) { harness async throws in
            // A second, independent limiter (as in another instance) on the same Redis.
            let other = try AppEnvironment.make(settings: harness.environment.settings, logger: Logger(label: "second"), eventLoopGroup: MultiThreadedEventLoopGroup.singleton)
            defer { other.closeRedis() }
            var allowed = 0
            for index in 0..<10 {
                let limiter = index.isMultiple(of: 2) ? harness.environment.services.limiter : other.services.limiter
                if await limiter.check(keyName: "test", group: .read).outcome == .allowed { allowed += 1 }
            }
            #expect(allowed == 6)
        }
    }
}
