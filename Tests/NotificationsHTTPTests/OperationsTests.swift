import Foundation
import HTTPTypes
import NotificationsCore
import Hummingbird
import HummingbirdTesting
import NIOCore
@testable import NotificationsHTTP
import Testing
import TestSupport

@Suite("Operations: metrics, admin, health")
struct OperationsTests {
    @Test func everyContractMetricExistsFromStartUp() async throws {
        try await withHarness { harness async throws in
            let text = try await harness.client.get("/metrics", headers: [:]).text
            for line in [
                #"redis_circuit_breaker_state{service="redis"} 0"#, #"redis_circuit_breaker_failures_total{service="redis"} 0"#,
                #"redis_operations_fallback_total{operation="rate_limit"} 0"#, "rate_limit_bypass_total 0", "notifications_created_total 0",
            ] {
                #expect(text.contains(line), "missing \(line)")
            }
            for family in ["http_requests_total", "http_request_duration_seconds", "http_requests_shed_total", "http_requests_in_flight"] {
                #expect(text.contains("# TYPE \(family) "), "missing \(family)")
            }
            // Every family has a help text (promtool check metrics asks for it).
            let lines = text.split(separator: "\n")
            for (index, line) in lines.enumerated() where line.hasPrefix("# TYPE ") {
                let name = line.split(separator: " ")[2]
                #expect(index > 0 && lines[index - 1].hasPrefix("# HELP \(name) "), "\(name) has no help text")
            }
        }
    }

    @Test func httpMetricsUseRouteTemplatesAndOneLabelForUnmatchedPaths() async throws {
        try await withHarness { harness async throws in
            _ = try await harness.client.create(recipient: "metrics-user")
            _ = try await harness.client.get("/v1/users/metrics-user/notifications")
            for index in 0..<5 { _ = try await harness.client.get("/random-\(index)", headers: [:]) }
            let text = try await harness.client.get("/metrics", headers: [:]).text
            #expect(text.contains(#"http_requests_total{method="GET",route="/v1/users/{userId}/notifications",status="200"} 1"#), "\(text)")
            #expect(text.contains(#"http_requests_total{method="POST",route="/v1/notifications",status="201"} 1"#))
            #expect(text.contains(#"http_requests_total{method="GET",route="unmatched",status="404"} 5"#))
            #expect(!text.contains("random-"))
            #expect(text.contains("notifications_created_total 1"))
            #expect(text.contains(#"http_request_duration_seconds_bucket{method="GET",route="/v1/users/{userId}/notifications""#))
            // The read after a write misses the feed cache; a second read hits it.
            _ = try await harness.client.get("/v1/users/metrics-user/notifications")
            let after = try await harness.client.get("/metrics", headers: [:]).text
            #expect(after.contains(#"feed_cache_requests_total{result="miss"} 1"#) && after.contains(#"feed_cache_requests_total{result="hit"} 1"#), "\(after)")
        }
    }

    @Test func adminDrillOpensUntilResetAndFailOpenServesMeanwhile() async throws {
        try await withHarness(configure: { $0.circuitRecoveryTimeoutMilliseconds = 200 }) { harness async throws in
            let list = try await harness.client.get("/admin/circuit-breakers", headers: [:]).jsonObject()
            let redis = try #require(list["redis"] as? [String: Any])
            #expect(redis["state"] as? String == "closed" && redis["forced"] as? Bool == false)
            #expect(redis["failureThreshold"] as? Int == 5 && redis["successThreshold"] as? Int == 2)

            let opened = try await harness.client.execute(uri: "/admin/circuit-breaker/redis/open", method: .post, headers: [:])
            #expect(try opened.jsonObject()["state"] as? String == "open")
            // Well past the recovery timeout, a drill stays open: no half-open probes.
            try await Task.sleep(for: .milliseconds(600))
            let during = try await harness.client.get("/admin/circuit-breakers", headers: [:]).jsonObject()["redis"] as? [String: Any]
            #expect(during?["state"] as? String == "open" && during?["forced"] as? Bool == true)
            let feed = try await harness.client.get("/v1/users/u/notifications")
            #expect(feed.status == .ok)
            #expect(feed.headers[HTTPField.Name("X-RateLimit-Status")!] == "bypassed-fail-open")
            let health = try await harness.client.get("/health", headers: [:]).jsonObject()
            #expect(health["status"] as? String == "degraded")
            let redisHealth = (health["components"] as? [String: Any])?["redis"] as? [String: Any]
            #expect(redisHealth?["status"] as? String == "down" && redisHealth?["circuit"] as? String == "open")

            let reset = try await harness.client.execute(uri: "/admin/circuit-breaker/redis/reset", method: .post, headers: [:])
            #expect(try reset.jsonObject()["state"] as? String == "closed")
            let after = try await harness.client.get("/health", headers: [:]).jsonObject()
            #expect(after["status"] as? String == "healthy")
            #expect(harness.logMessages.contains("Circuit breaker OPENED") && harness.logMessages.contains("Circuit breaker CLOSED"))
        }
    }

    @Test func adminTokenIsRequiredWhenSet() async throws {
        try await withHarness(configure: { $0.adminToken = "admin-token" }) { harness async throws in
            let missing = try await harness.client.get("/admin/circuit-breakers", headers: [:])
            #expect(missing.status == .unauthorized)
            #expect(try missing.jsonObject()["code"] as? String == "unauthorized")
            #expect(try await harness.client.get("/admin/circuit-breakers", headers: [.authorization: "Bearer wrong"]).status == .unauthorized)
            #expect(try await harness.client.get("/admin/circuit-breakers", headers: [.authorization: "Bearer admin-token"]).status == .ok)
            // API keys are not admin tokens.
            #expect(try await harness.client.get("/admin/circuit-breakers", headers: authorized).status == .unauthorized)
        }
    }

    /// A reverse proxy on the same host connects from loopback: its forwarding headers give it away.
    @Test(arguments: ["Forwarded", "X-Forwarded-For", "X-Real-IP"])
    func loopbackRequestsThroughAProxyAreRefusedWithoutAdminToken(header: String) async throws {
        try await withHarness { harness async throws in
            let direct = try await harness.client.get("/admin/circuit-breakers", headers: [:])
            #expect(direct.status == .ok)
            let name = try #require(HTTPField.Name(header))
            let proxied = try await harness.client.get("/admin/circuit-breakers", headers: [name: "for=203.0.113.7"])
            #expect(proxied.status == .forbidden)
            #expect(try proxied.jsonObject()["code"] as? String == "forbidden")
            let reset = try await harness.client.execute(uri: "/admin/circuit-breaker/redis/open", method: .post, headers: [name: "203.0.113.7"])
            #expect(reset.status == .forbidden)
            let after = try await harness.client.get("/admin/circuit-breakers", headers: [:]).jsonObject()["redis"] as? [String: Any]
            #expect(after?["state"] as? String == "closed")
        }
    }

    @Test func loopbackDetection() throws {
        #expect(AdminAuthMiddleware.isLoopback(try SocketAddress(ipAddress: "127.0.0.1", port: 1)))
        #expect(AdminAuthMiddleware.isLoopback(try SocketAddress(ipAddress: "127.8.9.1", port: 1)))
        #expect(AdminAuthMiddleware.isLoopback(try SocketAddress(ipAddress: "::1", port: 1)))
        #expect(!AdminAuthMiddleware.isLoopback(try SocketAddress(ipAddress: "10.0.0.1", port: 1)))
        #expect(!AdminAuthMiddleware.isLoopback(try SocketAddress(ipAddress: "::2", port: 1)))
        #expect(!AdminAuthMiddleware.isLoopback(nil))
    }

    /// Load balancers and uptime checks send HEAD: same status and headers as GET, no body.
    @Test func headIsAnsweredWhereverGetIs() async throws {
        try await withHarness { harness async throws in
            _ = try await harness.client.create(recipient: "head-user")
            for (uri, headers) in [
                ("/health/live", [:]), ("/health", [:]), ("/health/ready", [:]), ("/openapi.yaml", [:]), ("/admin/circuit-breakers", [:]),
                ("/v1/users/head-user/notifications", authorized), ("/v1/users/head-user/notifications/unread-count", authorized),
                ("/v1/users/nobody/notifications/\(String(repeating: "a", count: 24))", authorized), ("/nowhere", [:]),
                ("/v1/users/head-user/notifications", [:]),
            ] as [(String, HTTPFields)] {
                let get = try await harness.client.execute(uri: uri, method: .get, headers: headers)
                let head = try await harness.client.execute(uri: uri, method: .head, headers: headers)
                #expect(head.status == get.status, "\(uri)")
                #expect(head.body.readableBytes == 0, "\(uri)")
                for name in [HTTPField.Name.contentType, .contentLength, HTTPField.Name("RateLimit-Policy")!] {
                    #expect(head.headers[name] == get.headers[name], "\(uri) \(name)")
                }
                // The GET just filled the feed cache: HEAD says so too (hit, where GET said miss).
                #expect((head.headers[HTTPField.Name("X-Cache")!] == nil) == (get.headers[HTTPField.Name("X-Cache")!] == nil), "\(uri)")
            }
            // A stream answers HEAD without opening (and holding) a stream.
            let stream = try await harness.client.execute(uri: "/v1/users/head-user/notifications/stream", method: .head, headers: authorized)
            #expect(stream.status == .ok && stream.headers[.contentType] == "text/event-stream")
            #expect(try await harness.metric("sse_connections") == 0)
            // Allow lists HEAD wherever GET is; a POST-only path does not answer HEAD.
            #expect(try await harness.client.execute(uri: "/health", method: .delete, headers: [:]).headers[.allow] == "GET, HEAD")
            let postOnly = try await harness.client.execute(uri: "/v1/notifications", method: .head, headers: authorized)
            #expect(postOnly.status == .methodNotAllowed && postOnly.headers[.allow] == "POST")
        }
    }

    @Test func healthyHealthReportsBothComponents() async throws {
        try await withHarness { harness async throws in
            let health = try await harness.client.get("/health", headers: [:]).jsonObject()
            #expect(health["status"] as? String == "healthy")
            let components = try #require(health["components"] as? [String: Any])
            #expect((components["mongodb"] as? [String: Any])?["status"] as? String == "up")
            #expect((components["redis"] as? [String: Any])?["status"] as? String == "up")
            #expect((components["redis"] as? [String: Any])?["circuit"] as? String == "closed")
        }
    }
}

@Suite("The served OpenAPI document")
struct OpenAPITests {
    @Test func servedDocumentIsTheRepositorysOpenAPIFile() async throws {
        let file = try String(contentsOf: TestServers.repositoryRoot.appendingPathComponent("openapi.yaml"), encoding: .utf8)
        try await withHarness { harness in
            let response = try await harness.client.get("/openapi.yaml", headers: [:])
            #expect(response.status == .ok)
            #expect(response.text == file.trimmingCharacters(in: .newlines), "run scripts/embed-openapi after editing openapi.yaml")
        }
    }
}
