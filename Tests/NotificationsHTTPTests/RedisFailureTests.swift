import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import NIOPosix
import NotificationsCore
import RedisClient
import Testing
import TestSupport

/// Real faults on a real redis-server, for fail-open and fail-closed: the contract's
/// fail-open table from outside, plus the breaker's states, metrics and log lines.
@Suite("Redis failures: the fail-open table under real faults")
struct RedisFailureTests {
    enum Fault: String, CaseIterable, Sendable {
        case killed, paused, clientPause, outOfMemory
    }

    /// A second connection to the test's Redis, for injecting faults.
    static func admin(_ redis: ChildServer) throws -> RedisConnectionPool {
        RedisConnectionPool(
            configuration: try RedisConfiguration(url: "redis://127.0.0.1:\(redis.port)", operationTimeoutMilliseconds: 2000),
            eventLoopGroup: MultiThreadedEventLoopGroup.singleton, logger: Logger(label: "fault-injector"))
    }

    static func inject(_ fault: Fault, into redis: ChildServer) async throws {
        switch fault {
        case .killed: redis.kill()
        case .paused: redis.pause()
        case .clientPause:
            let admin = try admin(redis)
            defer { admin.close() }
            // Long enough for the checks made under it on a loaded CI machine (the circuit must
            // still be open when they look); `recover` waits for its end.
            _ = try await admin.send(RedisCommand("CLIENT", ["PAUSE", "6000", "ALL"]))
        case .outOfMemory:
            let admin = try admin(redis)
            defer { admin.close() }
            _ = try await admin.send(RedisCommand("CONFIG", ["SET", "maxmemory", "1"]))
        }
    }

    static func recover(_ fault: Fault, redis: ChildServer) async throws {
        switch fault {
        case .killed: try await redis.restart()
        case .paused: redis.resume()
        case .clientPause:
            // CLIENT UNPAUSE waits for the pause like any other command: wait for a PING to pass.
            let admin = try admin(redis)
            defer { admin.close() }
            _ = try await retrying(for: .seconds(10), every: .milliseconds(100)) {
                try? await admin.send(RedisCommand("PING", []))
            } until: { $0 != nil }
        case .outOfMemory:
            let admin = try admin(redis)
            defer { admin.close() }
            _ = try await admin.send(RedisCommand("CONFIG", ["SET", "maxmemory", "0"]))
        }
    }

    static func configure(failOpen: Bool) -> (inout Settings) -> Void {
        { settings in
            settings.redisFailOpen = failOpen
            settings.redisOperationTimeoutMilliseconds = 300
            settings.circuitRecoveryTimeoutMilliseconds = 1000
        }
    }

    static func circuitState(_ harness: Harness) async throws -> String? {
        let breakers = try await harness.client.get("/admin/circuit-breakers", headers: [:]).jsonObject()
        return (breakers["redis"] as? [String: Any])?["state"] as? String
    }

    /// Waits (up to 10 s) for the circuit to reach `state` by itself.
    static func waitForCircuit(_ harness: Harness, _ state: String) async throws {
        let deadline = ContinuousClock.now + .seconds(10)
        while try await circuitState(harness) != state {
            guard ContinuousClock.now < deadline else { Issue.record("circuit never became \(state)"); return }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    static func concurrentFeedReads(_ harness: Harness, count: Int) async throws -> [TestResponse] {
        try await withThrowingTaskGroup(of: TestResponse.self) { group in
            for index in 0..<count {
                group.addTask { try await harness.client.get("/v1/users/user-\(index % 4)/notifications") }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
    }

    @Test(arguments: Fault.allCases)
    func failOpenKeepsEveryRequestSucceedingThenRecoversByItself(fault: Fault) async throws {
        try await withHarness(configure: Self.configure(failOpen: true)) { harness async throws in
            let before = try await harness.client.get("/v1/users/u/notifications")
            #expect(before.status == .ok)
            #expect(before.headers[.init("X-RateLimit-Status")!] == "enforced")

            try await Self.inject(fault, into: harness.redis)
            let responses = try await Self.concurrentFeedReads(harness, count: 24)
            #expect(responses.allSatisfy { $0.status == .ok }, "\(fault): \(responses.map(\.status))")
            #expect(responses.allSatisfy { $0.headers[.init("X-RateLimit-Status")!] == "bypassed-fail-open" })
            #expect(responses.allSatisfy { $0.headers[.init("RateLimit")!] != nil && $0.headers[.init("X-RateLimit-Remaining")!] != nil })
            // A write goes on working too.
            #expect(try await harness.client.post("/v1/notifications", json: #"{"recipientId":"u","type":"x"}"#).status == .created)

            #expect(try await harness.metric("rate_limit_bypass_total") ?? 0 >= 24)
            #expect(try await harness.metric("redis_operations_fallback_total", #"operation="rate_limit""#) ?? 0 >= 24)
            #expect(try await harness.metric("redis_circuit_breaker_failures_total", #"service="redis""#) ?? 0 >= 5)
            // Out of memory, Redis still answers reads (the feed cache's lookups succeed), so
            // failures are not consecutive and the breaker may stay closed; each failing call
            // still falls back. Every other fault opens it.
            if fault != .outOfMemory {
                try await Self.waitForCircuit(harness, "open")
                #expect(try await harness.metric("redis_circuit_breaker_state", #"service="redis""#) == 2)
                let health = try await harness.client.get("/health", headers: [:])
                #expect(health.status == .ok)
                #expect(try health.jsonObject()["status"] as? String == "degraded")
            }

            try await Self.recover(fault, redis: harness.redis)
            try await Self.waitForCircuit(harness, "closed")
            if fault != .outOfMemory {
                let messages = harness.logMessages.filter { $0.hasPrefix("Circuit breaker") }
                #expect(messages.first == "Circuit breaker OPENED", "\(messages)")
                #expect(messages.suffix(2) == ["Circuit breaker HALF-OPEN", "Circuit breaker CLOSED"], "\(messages)")
            }
            #expect(try await harness.metric("redis_circuit_breaker_state", #"service="redis""#) == 0)
            let after = try await harness.client.get("/v1/users/u/notifications")
            #expect(after.headers[.init("X-RateLimit-Status")!] == "enforced")
        }
    }

    @Test func aHungRedisCostsARequestAtMostOneDeadline() async throws {
        try await withHarness(configure: { $0.redisOperationTimeoutMilliseconds = 1000 }) { harness in
            _ = try await harness.client.get("/v1/users/u/notifications")
            harness.redis.pause()
            defer { harness.redis.resume() }
            // Rate limit and feed cache both use Redis; only the first waits for the deadline.
            let started = ContinuousClock.now
            let response = try await harness.client.get("/v1/users/u/notifications")
            let elapsed = ContinuousClock.now - started
            #expect(response.status == .ok)
            #expect(response.headers[.init("X-Cache")!] == "bypass")
            #expect(elapsed < .milliseconds(1800), "one 1 s deadline, not two: \(elapsed)")
            let health = ContinuousClock.now
            #expect(try await harness.client.get("/health", headers: [:]).status == .ok)
            #expect(ContinuousClock.now - health < .milliseconds(1800))
        }
    }

    @Test(arguments: Fault.allCases)
    func failClosedAnswers503RateLimiterUnavailableThenRecovers(fault: Fault) async throws {
        try await withHarness(configure: Self.configure(failOpen: false)) { harness async throws in
            #expect(try await harness.client.get("/v1/users/u/notifications").status == .ok)
            try await Self.inject(fault, into: harness.redis)
            let responses = try await Self.concurrentFeedReads(harness, count: 12)
            #expect(responses.allSatisfy { $0.status == .serviceUnavailable }, "\(fault): \(responses.map(\.status))")
            for response in responses {
                #expect(try response.jsonObject()["code"] as? String == "rate_limiter_unavailable")
                #expect(Int(response.headers[.retryAfter] ?? "") ?? 0 >= 1)
                #expect(response.headers[.init("RateLimit")!] == nil && response.headers[.init("X-RateLimit-Limit")!] == nil,
                        "a fail-closed 503 carries Retry-After only")
            }
            #expect(try await harness.metric("rate_limit_bypass_total") == 0)
            // Health, metrics and admin are never rate limited, so they still answer.
            #expect(try await harness.client.get("/health/live", headers: [:]).status == .ok)
            try await Self.recover(fault, redis: harness.redis)
            try await Self.waitForCircuit(harness, "closed")
            #expect(try await harness.client.get("/v1/users/u/notifications").status == .ok)
        }
    }
}
