import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import MongoStore
import NIOCore
import NIOPosix
import NotificationsCore
import NotificationsHTTP
import RedisClient
import Testing
import TestSupport

@Suite("Idempotency-Key: exactly once, with Redis up or down")
struct IdempotencyTests {
    static let replayHeader = HTTPField.Name("Idempotency-Replay")!
    static let body = #"{"recipientId":"idem-user","type":"x","title":"once"}"#

    static func post(_ client: any TestClientProtocol, key: String, body: String = body, apiKey: String = apiKey) async throws -> TestResponse {
        try await client.execute(
            uri: "/v1/notifications", method: .post,
            headers: [.authorization: "Bearer \(apiKey)", .contentType: "application/json", HTTPField.Name("Idempotency-Key")!: key],
            body: ByteBuffer(string: body))
    }

    static func count(_ client: any TestClientProtocol, user: String = "idem-user") async throws -> Int {
        (try await client.get("/v1/users/\(user)/notifications?limit=100").jsonObject()["items"] as? [Any])?.count ?? -1
    }

    @Test func repeatReplaysTheStoredResponse() async throws {
        try await withHarness { harness in
            let first = try await Self.post(harness.client, key: "k-1")
            #expect(first.status == .created)
            #expect(first.headers[Self.replayHeader] == nil)
            let second = try await Self.post(harness.client, key: "k-1")
            #expect(second.status == .created)
            #expect(second.headers[Self.replayHeader] == "true")
            #expect(second.text == first.text)
            #expect(second.headers[.location] == first.headers[.location])
            #expect(try await Self.count(harness.client) == 1)
        }
    }

    @Test func sameKeyOtherBodyOrRouteIs422() async throws {
        try await withHarness { harness in
            #expect(try await Self.post(harness.client, key: "k-2").status == .created)
            let otherBody = try await Self.post(harness.client, key: "k-2", body: #"{"recipientId":"idem-user","type":"y"}"#)
            #expect(otherBody.status == .unprocessableContent)
            #expect(try otherBody.jsonObject()["code"] as? String == "idempotency_key_reused")
            let otherRoute = try await harness.client.execute(
                uri: "/v1/users/idem-user/notifications/read-all", method: .post,
                headers: [.authorization: "Bearer \(apiKey)", HTTPField.Name("Idempotency-Key")!: "k-2"])
            #expect(otherRoute.status == .unprocessableContent)
            #expect(try await Self.count(harness.client) == 1)
        }
    }

    @Test(arguments: ["", String(repeating: "k", count: 256), "tab\there", "naïve"])
    func invalidKeysAre400(key: String) async throws {
        try await withHarness { harness in
            let response = try await Self.post(harness.client, key: key)
            #expect(response.status == .badRequest)
            let problem = try response.jsonObject()
            #expect(problem["code"] as? String == "validation_failed")
            #expect((problem["detail"] as? String)?.contains("Idempotency-Key") == true)
            #expect(try await Self.count(harness.client) == 0)
        }
    }

    @Test func keysAreScopedPerAPIKey() async throws {
        try await withHarness { harness in
            #expect(try await Self.post(harness.client, key: "shared-key").status == .created)
            let other = try await Self.post(harness.client, key: "shared-key", apiKey: "other-secret")
            #expect(other.status == .created)
            #expect(other.headers[Self.replayHeader] == nil)
            #expect(try await Self.count(harness.client) == 2)
        }
    }

    @Test func concurrentRepeatsCreateExactlyOne() async throws {
        try await withHarness { harness in
            let statuses = try await withThrowingTaskGroup(of: (Int, Bool).self) { group in
                for _ in 0..<8 {
                    group.addTask {
                        let response = try await Self.post(harness.client, key: "race")
                        return (Int(response.status.code), response.headers[Self.replayHeader] == "true")
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(statuses.filter { $0 == (201, false) }.count == 1, "\(statuses)")
            #expect(statuses.allSatisfy { $0.0 == 201 || $0.0 == 409 }, "\(statuses)")
            #expect(try await Self.count(harness.client) == 1)
        }
    }

    @Test func redisDownAnotherInstanceStillReplaysFromMongoDB() async throws {
        try await withHarness { harness in
            #expect(try await Self.post(harness.client, key: "durable").status == .created)
            harness.redis.kill()
            // A second instance: nothing in its memory, Redis gone: MongoDB answers.
            let other = try AppEnvironment.make(
                settings: harness.environment.settings, logger: Logger(label: "other"), eventLoopGroup: MultiThreadedEventLoopGroup.singleton)
            defer { other.closeRedis() }
            let fingerprint = IdempotencyStore.fingerprint(method: "POST", path: "/v1/notifications", body: Array(Self.body.utf8))
            guard case .replay(let stored) = try await other.services.idempotency.begin(scope: "test", key: "durable", fingerprint: fingerprint) else {
                Issue.record("expected a replay from MongoDB")
                return
            }
            #expect(stored.status == 201)
            // And through HTTP on the first instance, Redis down, the repeat is still a replay.
            let again = try await Self.post(harness.client, key: "durable")
            #expect(again.headers[Self.replayHeader] == "true")
            #expect(try await Self.count(harness.client) == 1)
            await other.mongoPool.shutdown()
        }
    }

    @Test func inProgressRepeatIs409AndAFailedRequestReleasesTheKey() async throws {
        try await withHarness { harness in
            // A claim held by a request still running elsewhere.
            let fingerprint = IdempotencyStore.fingerprint(method: "POST", path: "/v1/notifications", body: Array(Self.body.utf8))
            guard case .proceed(let claim) = try await harness.environment.services.idempotency.begin(scope: "test", key: "busy", fingerprint: fingerprint) else {
                Issue.record("expected to claim")
                return
            }
            let busy = try await Self.post(harness.client, key: "busy")
            #expect(busy.status == .conflict)
            #expect(try busy.jsonObject()["code"] as? String == "idempotency_in_progress")
            #expect(busy.headers[.retryAfter] == "1")
            await harness.environment.services.idempotency.release(claim)
            #expect(try await Self.post(harness.client, key: "busy").status == .created)
        }
    }

    @Test func aClaimWhoseReleaseFailedIsFreedOnceMongoDBIsBack() async throws {
        try await withHarness { harness in
            let store = harness.environment.services.idempotency
            let fingerprint = IdempotencyStore.fingerprint(method: "POST", path: "/v1/notifications", body: Array(Self.body.utf8))
            guard case .proceed(let claim) = try await store.begin(scope: "test", key: "orphan", fingerprint: fingerprint) else {
                Issue.record("expected to claim")
                return
            }
            // MongoDB dies under the request: the release cannot reach it.
            harness.mongo.kill()
            await store.release(claim)
            try await harness.mongo.restart()
            let deadline = ContinuousClock.now + .seconds(10)
            var response = try await Self.post(harness.client, key: "orphan")
            while response.status != .created && ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(300))
                response = try await Self.post(harness.client, key: "orphan")
            }
            #expect(response.status == .created, "freed well before the 60 s claim lease")
        }
    }

    @Test func mongoDownIs503AndLeavesNoKeyClaimed() async throws {
        try await withHarness { harness in
            harness.mongo.kill()
            let down = try await Self.post(harness.client, key: "during-outage")
            #expect(down.status == .serviceUnavailable)
            #expect(try down.jsonObject()["code"] as? String == "storage_unavailable")
            try await harness.mongo.restart()
            let deadline = ContinuousClock.now + .seconds(15)
            var response = try await Self.post(harness.client, key: "during-outage")
            while response.status == .serviceUnavailable && ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(200))
                response = try await Self.post(harness.client, key: "during-outage")
            }
            #expect(response.status == .created)
            #expect(response.headers[Self.replayHeader] == nil)
        }
    }
}
