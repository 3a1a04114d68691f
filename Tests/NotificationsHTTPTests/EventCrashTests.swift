import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import NotificationsCore
import Testing
import TestSupport

/// A background fan-out whose owner dies (SIGKILL) or freezes (SIGSTOP) midway: the owner is
/// the real `notifications` binary, the instance that takes over is the test's own, both on the
/// same Redis and MongoDB-wire server.
@Suite("Events: a fan-out survives its owner", .serialized)
struct EventCrashTests {
    static let followers = 5000

    /// The binary built next to the tests (`swift build --build-tests` builds it too).
    static var binary: URL { TestServers.repositoryRoot.appendingPathComponent(".build/debug/notifications") }

    /// - Parameter overrides: settings of its own (environment variables).
    static func startOwner(_ harness: Harness, overrides: [String: String] = [:]) async throws -> (Process, Int) {
        guard FileManager.default.isExecutableFile(atPath: binary.path) else { throw TestServerError.missing("\(binary.path): run swift build first") }
        let port = try TestServers.freePort()
        let process = Process()
        process.executableURL = binary
        process.arguments = ["serve"]
        process.environment = [
            "HOST": "127.0.0.1", "PORT": "\(port)", "REDIS_URL": "redis://127.0.0.1:\(harness.redis.port)",
            "MONGODB_URI": "mongodb://127.0.0.1:\(harness.mongo.port)/notifications?maxPoolSize=2", "API_KEYS": "test:\(apiKey)",
            "EVENT_SYNC_FANOUT_LIMIT": "100", "EVENT_FANOUT_LEASE_MS": "3000", "MONGODB_OPERATION_TIMEOUT_MS": "3000", "LOG_LEVEL": "warning",
            "RATE_LIMIT_POLICIES": "*:unlimited",
        ].merging(overrides) { $1 }
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        try await TestServers.waitForPort(port)
        return (process, port)
    }

    /// Over a connection of its own; `timeout` for a request that may take long on a busy box.
    static func postEvent(port: Int, _ json: String, timeout: TimeInterval = 60) async throws -> (Int, [String: Any]) {
        var request = URLRequest(url: URL(string: "http://127.0.0.1:\(port)/v1/events")!)
        request.httpMethod = "POST"
        request.timeoutInterval = timeout
        request.setValue("Bearer \(apiKey)", forHTTPHeaderField: "Authorization")
        request.setValue("application/json", forHTTPHeaderField: "Content-Type")
        request.httpBody = Data(json.utf8)
        let (data, response) = try await URLSession.shared.data(for: request)
        return ((response as? HTTPURLResponse)?.statusCode ?? 0, (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] ?? [:])
    }

    @Test(arguments: [SIGKILL, SIGSTOP])
    func anotherInstanceFinishesAFanOutWhoseOwnerStopped(signal: Int32) async throws {
        try await withHarness(configure: {
            $0.eventSyncFanoutLimit = 100
            $0.eventFanoutLeaseMilliseconds = 3000
            // The dev server is busy with batches of 1000 inserts: give reads room.
            $0.mongoOperationTimeoutMilliseconds = 5000
        }) { harness in
            let ids = try await Events.seedFollowers(harness, of: "celebrity", count: Self.followers)
            let (owner, port) = try await Self.startOwner(harness)
            defer {
                kill(owner.processIdentifier, SIGCONT)
                kill(owner.processIdentifier, SIGKILL)
                owner.waitUntilExit()
            }
            let type = "crash.\(signal)"
            let event = "{\"id\": \"ev-crash\", \"type\": \"\(type)\", \"actorId\": \"celebrity\", \"audience\": {\"followersOf\": \"celebrity\"}}"
            let (status, body) = try await Self.postEvent(port: port, event)
            #expect(status == 202 && body["status"] as? String == "in_progress")
            // Midway: at least one batch written, not all of them.
            let before = try await retrying(for: .seconds(30), every: .milliseconds(100)) {
                try await harness.client.get("/v1/events/ev-crash").jsonObject()["notificationsCreated"] as? Int ?? 0
            } until: { $0 >= 1000 }
            kill(owner.processIdentifier, signal)
            #expect(before < Self.followers, "the owner stopped midway (\(before) written)")
            let final = try await retrying(for: .seconds(90), every: .milliseconds(500)) {
                try await harness.client.get("/v1/events/ev-crash").jsonObject()
            } until: { $0["status"] as? String == "completed" }
            #expect(final["status"] as? String == "completed")
            #expect(final["notificationsCreated"] as? Int == Self.followers)
            if signal == SIGSTOP {
                // The frozen owner wakes up after the takeover: its lease is gone, it must not write again.
                kill(owner.processIdentifier, SIGCONT)
                try await Task.sleep(for: .seconds(4))
            }
            let deliveries = try await Events.deliveries(harness, type: type)
            #expect(deliveries.count == Self.followers, "every follower got one")
            #expect(deliveries.values.allSatisfy { $0 == 1 }, "nobody got two")
            #expect(Set(deliveries.keys) == Set(ids))
            let again = try await harness.client.get("/v1/events/ev-crash").jsonObject()
            #expect(again["notificationsCreated"] as? Int == Self.followers)
            // Every follower's count, those of the interrupted batch included, is exactly one.
            let wrong = try await Events.wrongCounts(harness, ids, expected: 1)
            #expect(wrong.isEmpty, "\(wrong.count) followers read another count, e.g. \(wrong.prefix(3))")
        }
    }
}
