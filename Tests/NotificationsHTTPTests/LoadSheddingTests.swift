import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import MongoStore
import NIOCore
import NotificationsCore
import NotificationsHTTP
import Testing
import TestSupport

/// MAX_IN_FLIGHT and the MongoDB work queue: beyond either, 503 `overloaded` at once.
@Suite("Load shedding")
struct LoadSheddingTests {
    static let body = #"{"recipientId":"shed-user","type":"x"}"#

    @Test func requestsBeyondMaxInFlightAreShedAtOnceAndServiceRecovers() async throws {
        try await withHarness(configure: { $0.maxInFlight = 4 }) { harness in
            // A running instance: connected to MongoDB before it freezes.
            _ = try await harness.client.create(recipient: "shed-user")
            harness.mongo.pause()
            var resumed = false
            defer { if !resumed { harness.mongo.resume() } }
            try await withThrowingTaskGroup(of: HTTPResponse.Status.self) { group in
                for _ in 0..<4 {
                    group.addTask { try await harness.postOnOwnConnection("/v1/notifications", json: Self.body) }
                }
                // The four fill every slot (they wait for the frozen MongoDB).
                _ = try await retrying(for: .seconds(5)) { try await harness.metric("http_requests_in_flight") } until: { $0 == 4 }
                for headers in [jsonHeaders, [.contentType: "application/json"], [.authorization: "Bearer wrong"]] as [HTTPFields] {
                    let shed = try await harness.client.post("/v1/notifications", json: Self.body, headers: headers)
                    #expect(shed.status == .serviceUnavailable, "\(shed.headers) \(shed.text)")
                    #expect(try shed.jsonObject()["code"] as? String == "overloaded", "\(shed.text)")
                    #expect(shed.headers[.retryAfter] == "1")
                    #expect(shed.headers[.contentType] == "application/problem+json")
                    // Decided before authentication and rate limiting: no rate-limit headers.
                    #expect(shed.headers[HTTPField.Name("RateLimit")!] == nil && shed.headers[HTTPField.Name("X-RateLimit-Limit")!] == nil)
                }
                // Reads are /v1 requests too; health, metrics and admin are never shed.
                #expect(try await harness.client.get("/v1/users/shed-user/notifications").status == .serviceUnavailable)
                #expect(try await harness.client.get("/health/live", headers: [:]).status == .ok)
                #expect(try await harness.client.get("/metrics", headers: [:]).status == .ok)
                #expect(try await harness.client.get("/admin/circuit-breakers", headers: [:]).status == .ok)
                #expect(try await harness.metric("http_requests_shed_total", #"reason="in_flight""#) == 4)

                harness.mongo.resume()
                resumed = true
                for try await held in group {
                    // Each held request ends within MONGODB_OPERATION_TIMEOUT_MS: created or storage_unavailable.
                    #expect(held == .created || held == .serviceUnavailable)
                }
            }
            #expect(try await harness.metric("http_requests_in_flight") == 0)
            let after = try await harness.client.post("/v1/notifications", json: Self.body)
            #expect(after.status == .created)
        }
    }

    @Test func openStreamsDoNotCountAgainstMaxInFlight() async throws {
        try await withHarness(configure: { $0.maxInFlight = 2 }) { harness in
            var streams: [SSEClient] = []
            for _ in 0..<3 { streams.append(try await StreamTests.open(harness, "streamer")) }
            defer { for stream in streams { stream.close() } }
            #expect(try await harness.client.get("/v1/users/streamer/notifications").status == .ok)
            #expect(try await harness.metric("http_requests_shed_total", #"reason="in_flight""#) == 0)
        }
    }

    @Test func aFullMongoDBWorkQueueShedsInsteadOfQueueing() async throws {
        try await withHarness(configure: { $0.mongoQueueCapacity = 2 }) { harness in
            // Background work (the sweeps) shares the two slots: a create may be shed now and then.
            let first = try await retrying(for: .seconds(10)) { try await harness.client.post("/v1/notifications", json: Self.body) } until: {
                $0.status == .created
            }
            #expect(first.status == .created)
            harness.mongo.pause()
            var resumed = false
            defer { if !resumed { harness.mongo.resume() } }
            try await withThrowingTaskGroup(of: HTTPResponse.Status.self) { group in
                // Feed reads of users not cached (a page query and a counter read each): they hold
                // both slots while MongoDB is frozen (with the sweeps, whichever came first). Reads,
                // not creates: a create would wait behind another in the group commit, not in the queue.
                for user in ["shed-a", "shed-b"] {
                    group.addTask { try await harness.getOnOwnConnection("/v1/users/\(user)/notifications") }
                }
                _ = try await retrying(for: .seconds(5)) { harness.environment.mongoPool.queuedOperations } until: { $0 == 2 }
                let before = try await harness.metric("http_requests_shed_total", #"reason="storage_queue""#) ?? 0
                let shed = try await harness.client.get("/v1/users/shed-c/notifications")
                #expect(shed.status == .serviceUnavailable, "\(shed.headers) \(shed.text)")
                #expect(try shed.jsonObject()["code"] as? String == "overloaded")
                #expect(shed.headers[.retryAfter] == "1")
                // Health pings bypass the queue: "busy" is not "MongoDB is down".
                #expect(try await harness.metric("http_requests_shed_total", #"reason="storage_queue""#) == before + 1)
                harness.mongo.resume()
                resumed = true
                for try await _ in group {}
            }
            // Background work (cleanups of the writes cut off by the freeze) may hold the two
            // slots for a moment after the thaw; then creates go through again.
            let after = try await retrying(for: .seconds(10)) { try await harness.client.post("/v1/notifications", json: Self.body) } until: {
                $0.status == .created
            }
            #expect(after.status == .created)
        }
    }
}

extension Harness {
    /// The harness's client is one connection (requests on it wait for each other): requests
    /// meant to be in flight together each get their own.
    func postOnOwnConnection(_ uri: String, json: String, headers: HTTPFields = jsonHeaders) async throws -> HTTPResponse.Status {
        try await onOwnConnection { try await $0.post(uri, headers: headers, body: ByteBuffer(string: json)) }
    }

    func getOnOwnConnection(_ uri: String, headers: HTTPFields = authorized) async throws -> HTTPResponse.Status {
        try await onOwnConnection { try await $0.get(uri, headers: headers) }
    }

    private func onOwnConnection(_ send: (TestClient) async throws -> TestClient.Response) async throws -> HTTPResponse.Status {
        let client = TestClient(host: "127.0.0.1", port: self.client.port ?? 0)
        client.connect()
        do {
            let response = try await send(client).head.status
            try await client.shutdown()
            return response
        } catch {
            try? await client.shutdown()
            throw error
        }
    }
}
