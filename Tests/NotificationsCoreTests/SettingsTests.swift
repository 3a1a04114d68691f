import Foundation
import Logging
@testable import NotificationsCore
import Testing

@Suite("Settings: env wins over the config file; bad values name the variable")
struct SettingsTests {
    /// Loads settings as `serve` does; `file` is written to a fresh file that CONFIG_FILE names.
    func load(_ environment: [String: String], file: String? = nil) async throws(SettingsError) -> Settings {
        try await loadWithSources(environment, file: file).settings
    }

    func loadWithSources(_ environment: [String: String], file: String? = nil) async throws(SettingsError) -> (settings: Settings, sources: [String: String]) {
        var environment = environment
        if let file {
            let path = FileManager.default.temporaryDirectory.appendingPathComponent("settings-\(UUID().uuidString).json").path
            #expect(FileManager.default.createFile(atPath: path, contents: Data(file.utf8)))
            environment["CONFIG_FILE"] = path
        }
        return try await Settings.loadWithSources(environment: environment) { path in Array(try Data(contentsOf: URL(fileURLWithPath: path))) }
    }

    @Test func defaultsMatchTheContract() async throws {
        let settings = try await load([:])
        #expect(settings.host == "0.0.0.0" && settings.port == 8080)
        #expect(settings.redisURL == "redis://localhost:6379")
        #expect(settings.mongoURI == "mongodb://localhost:27017/notifications")
        #expect(settings.redisFailOpen)
        #expect(settings.circuitFailureThreshold == 5 && settings.circuitRecoveryTimeoutMilliseconds == 30000 && settings.circuitSuccessThreshold == 2)
        #expect(settings.redisOperationTimeoutMilliseconds == 5000 && settings.mongoOperationTimeoutMilliseconds == 5000)
        #expect(settings.idempotencyTTLSeconds == 86400 && settings.eventRetentionSeconds == 604_800 && settings.feedCacheTTLSeconds == 30)
        #expect(settings.lockTTLMilliseconds == 10000 && settings.lockWaitMilliseconds == 2000 && settings.shutdownGraceSeconds == 10)
        #expect(settings.rateLimitPolicies == [RateLimitPolicy(name: "*", limit: 100, windowMilliseconds: 1000)])
        #expect(settings.adminToken == nil && settings.apiKeys.isEmpty)
    }

    @Test func environmentWinsOverConfigFile() async throws {
        let file = #"{"PORT": 9000, "REDIS_FAIL_OPEN": false, "LOG_LEVEL": "debug", "API_KEYS": "a:b", "MAX_IN_FLIGHT": 64, "routeGroupPolicies": {"write": "*:20/1s"}}"#
        let (settings, sources) = try await loadWithSources(["PORT": "9100", "ADMIN_TOKEN": "  "], file: file)
        #expect(settings.port == 9100 && sources["PORT"] == "environment")
        #expect(settings.redisFailOpen == false && sources["REDIS_FAIL_OPEN"]?.hasSuffix(".json") == true)
        #expect(settings.logLevel == .debug)
        #expect(settings.apiKeys == [APIKey(name: "a", secret: "b")])
        #expect(settings.maxInFlight == 64)
        #expect(settings.routeGroupPolicies[.write] == [RateLimitPolicy(name: "*", limit: 20, windowMilliseconds: 1000)])
        // A blank variable is unset (compose files write `ADMIN_TOKEN: ${ADMIN_TOKEN:-}`).
        #expect(settings.adminToken == nil && sources["ADMIN_TOKEN"] == "default")
        #expect(sources["HOST"] == "default")
    }

    @Test func effectiveValuesMaskEverySecret() async throws {
        let settings = try await load([
            "API_KEYS": "app:app-secret-1,ops:ops-secret-2", "ADMIN_TOKEN": "admin-secret-3",
            "REDIS_URL": "redis://:redis-secret-4@cache:6379/2", "MONGODB_URI": "mongodb://user:mongo-secret-5@db:27017/notifications",
        ])
        let printed = settings.effectiveValues.map { "\($0.name)=\($0.value)" }.joined(separator: "\n")
        for secret in ["app-secret-1", "ops-secret-2", "admin-secret-3", "redis-secret-4", "mongo-secret-5"] {
            #expect(!printed.contains(secret), "\(secret) printed")
        }
        #expect(printed.contains("API_KEYS=app:****,ops:****"))
        #expect(printed.contains("REDIS_URL=redis://:****@cache:6379/2"))
        #expect(printed.contains("MONGODB_URI=mongodb://user:****@db:27017/notifications"))
    }

    /// The README's variable table and the variables the service reads are the same set
    /// (`CONFIG_FILE` is described in the paragraph above the table).
    @Test func everyVariableIsDocumentedAndEveryDocumentedVariableIsRead() throws {
        let readme = try String(contentsOfFile: #filePath.replacingOccurrences(of: "Tests/NotificationsCoreTests/SettingsTests.swift", with: "README.md"), encoding: .utf8)
        let tableStart = try #require(readme.firstRange(of: "| variable | default | meaning |"))
        let rows = readme[tableStart.upperBound...].split(separator: "\n").prefix { $0.hasPrefix("|") }.dropFirst()
        var documented: Set<String> = ["CONFIG_FILE"]
        for row in rows {
            let firstCell = row.split(separator: "|")[0]
            for match in firstCell.matches(of: /`([A-Z_]+)`/) { documented.insert(String(match.1)) }
        }
        #expect(documented == Set(Settings.variableNames))
    }

    @Test(arguments: [
        ("PORT", "0"), ("PORT", "65536"), ("PORT", "http"), ("REDIS_FAIL_OPEN", "maybe"), ("REDIS_CIRCUIT_FAILURE_THRESHOLD", "0"),
        ("REDIS_CIRCUIT_RECOVERY_TIMEOUT", "-5"), ("REDIS_OPERATION_TIMEOUT_MS", "5s"), ("REDIS_URL", "localhost:6379"),
        ("REDIS_URL", "redis://h:port"), ("MONGODB_URI", "postgres://x"), ("API_KEYS", "nocolon"), ("API_KEYS", "a:1,a:2"),
        ("API_KEYS", "a:"), ("RATE_LIMIT_POLICIES", "*:ten/1s"), ("RATE_LIMIT_POLICIES", "*:10/1y"), ("RATE_LIMIT_POLICIES", "*:0/1s"),
        ("RATE_LIMIT_POLICIES", "*:1/1s,*:2/1s"), ("RATE_LIMIT_POLICIES", "*:2000/1ms"), ("LOG_LEVEL", "loud"), ("SHUTDOWN_GRACE_SECONDS", "forever"), ("LOCK_TTL_MS", "1"),
        ("CONFIG_FILE", "config/missing.json"), ("REDIS_SENTINELS", "no-port"), ("STREAM_POLL_INTERVAL_MS", "5"),
        ("STREAM_MAX_CONNECTIONS", "0"), ("EVENT_FANOUT_LEASE_MS", "10"), ("EVENT_SYNC_FANOUT_LIMIT", "-1"),
    ])
    func badValueNamesItsVariable(name: String, value: String) async {
        do {
            _ = try await load([name: value])
            Issue.record("\(name)=\(value) was accepted")
        } catch {
            #expect(error.variable == name)
            #expect(error.description.hasPrefix("invalid \(name): "))
            #expect(!error.description.contains("\n"))
        }
    }

    @Test func sentinelsNeedTheirMasterName() async {
        do {
            _ = try await load(["REDIS_SENTINELS": "127.0.0.1:26379"])
            Issue.record("sentinels without a master name were accepted")
        } catch {
            #expect(error.variable == "REDIS_SENTINEL_MASTER")
        }
        #expect((try? await load(["REDIS_SENTINELS": "a:1, b:2", "REDIS_SENTINEL_MASTER": "m"]).redisSentinels) == ["a:1", "b:2"])
    }

    /// An in-progress claim must never read as expired (and be taken over while its request runs).
    @Test func idempotencyRetentionMustOutlastTheClaimLease() async throws {
        do {
            _ = try await load(["IDEMPOTENCY_TTL_SECONDS": "30"])
            Issue.record("a retention shorter than the 60 s claim lease was accepted")
        } catch {
            #expect(error.variable == "IDEMPOTENCY_TTL_SECONDS")
            #expect(error.description.contains("claim lease"))
        }
        #expect(try await load(["IDEMPOTENCY_TTL_SECONDS": "61"]).idempotencyTTLSeconds == 61)
    }

    @Test func secretsAreNotEchoedInErrors() async {
        do {
            _ = try await load(["API_KEYS": "good:s3cr3t-value,broken"])
            Issue.record("accepted")
        } catch {
            #expect(!error.description.contains("s3cr3t-value"))
        }
    }

    @Test(arguments: [
        (#"{"PROT": 1}"#, "CONFIG_FILE"), ("{", "CONFIG_FILE"), ("[]", "CONFIG_FILE"), (#"{"PORT": 80.5}"#, "PORT"),
        (#"{"PORT": "http"}"#, "PORT"), (#"{"PORT": [1]}"#, "PORT"), (#"{"routeGroupPolicies": {"delete": "*:1/1s"}}"#, "routeGroupPolicies"),
        (#"{"routeGroupPolicies": {"write": "*:x/1s"}}"#, "routeGroupPolicies.write"), (#"{"REDIS_FAIL_OPEN": "maybe"}"#, "REDIS_FAIL_OPEN"),
    ])
    func configFileRejectsUnknownKeysBadJSONAndBadValues(file: String, variable: String) async {
        do {
            _ = try await load([:], file: file)
            Issue.record("\(file) was accepted")
        } catch {
            #expect(error.variable == variable, "\(error)")
        }
    }

    @Test func keySpecificPoliciesWinOverGroupDefaults() {
        let policies = RateLimitPolicies(
            global: [RateLimitPolicy(name: "internal", limit: nil, windowMilliseconds: 1000), RateLimitPolicy(name: "*", limit: 100, windowMilliseconds: 1000)],
            byGroup: [.write: [RateLimitPolicy(name: "*", limit: 20, windowMilliseconds: 1000), RateLimitPolicy(name: "batch", limit: 5, windowMilliseconds: 1000)]])
        #expect(policies.policy(forKey: "internal", group: .write).policy.limit == nil, "unlimited exempts the key everywhere")
        #expect(policies.policy(forKey: "batch", group: .write).policy.limit == 5)
        #expect(policies.policy(forKey: "app", group: .write).policy.limit == 20)
        #expect(policies.policy(forKey: "app", group: .read).policy.limit == 100)
        #expect(policies.policy(forKey: "app", group: .read).name == "default")
        #expect(policies.policy(forKey: "app", group: .write).name == "write-default")
    }

    @Test func ratePolicies() throws {
        let policies = try RateLimitPolicy.parseList("*:100/1s, internal:unlimited, mobile:30/15m, batch:5/500ms")
        #expect(policies == [
            RateLimitPolicy(name: "*", limit: 100, windowMilliseconds: 1000),
            RateLimitPolicy(name: "internal", limit: nil, windowMilliseconds: 1000),
            RateLimitPolicy(name: "mobile", limit: 30, windowMilliseconds: 900_000),
            RateLimitPolicy(name: "batch", limit: 5, windowMilliseconds: 500),
        ])
    }
}
