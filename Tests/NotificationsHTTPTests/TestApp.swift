import Foundation
import Hummingbird
import HummingbirdTesting
import InMemoryLogging
import Logging
import NIOCore
import MongoStore
import NIOPosix
import RedisClient
import NotificationsCore
import NotificationsHTTP
import ServiceLifecycle
import Testing
import TestSupport

let apiKey = "test-secret"
let authorized: HTTPFields = [.authorization: "Bearer \(apiKey)"]
let jsonHeaders: HTTPFields = [.authorization: "Bearer \(apiKey)", .contentType: "application/json"]

/// A running service: the real router and wiring (`AppEnvironment`) on a live HTTP server,
/// over a real redis-server and MongoDB-wire server started for the test.
struct Harness: Sendable {
    let client: any TestClientProtocol
    let redis: ChildServer
    let mongo: ChildServer
    let environment: AppEnvironment
    let logs: InMemoryLogHandler
    /// With `withHarness(cluster: true)`: the Redis Cluster (`redis` is then its first node).
    var cluster: TestCluster? = nil

    var logMessages: [String] { logs.entries.map(\.message.description) }

    func metric(_ name: String, _ labels: String = "") async throws -> Double? {
        let text = try await client.get("/metrics", headers: [:]).text
        let prefix = labels.isEmpty ? "\(name) " : "\(name){\(labels)} "
        return text.split(separator: "\n").first { $0.hasPrefix(prefix) }.flatMap { Double($0.dropFirst(prefix.count)) }
    }
}

/// - Parameter cluster: run on a local Redis Cluster (three masters, three replicas) instead of one Redis.
func withHarness(cluster: Bool = false, configure: (inout Settings) -> Void = { _ in }, _ test: @Sendable (Harness) async throws -> Void) async throws {
    var settings = Settings()
    settings.apiKeys = [APIKey(name: "test", secret: apiKey), APIKey(name: "other", secret: "other-secret")]
    settings.mongoOperationTimeoutMilliseconds = 1500
    settings.redisOperationTimeoutMilliseconds = 500
    settings.rateLimitPolicies = [RateLimitPolicy(name: "*", limit: 10_000, windowMilliseconds: 1000)]
    settings.retentionInterval = .seconds(30)
    configure(&settings)
    try await TestServers.fixtures.withPermit { [settings] in try await runHarness(settings, cluster: cluster, test) }
}

private func runHarness(_ configured: Settings, cluster useCluster: Bool, _ test: @Sendable (Harness) async throws -> Void) async throws {
    let cluster = useCluster ? try await TestServers.startRedisCluster() : nil
    defer { cluster?.stop() }
    let redis = if let cluster { cluster.nodes[0] } else { try await TestServers.startRedis() }
    defer { redis.stop() }
    let mongo = try await TestServers.startMongo()
    defer { mongo.stop() }
    var settings = configured
    settings.redisURL = "redis://127.0.0.1:\(redis.port)"
    if let cluster { settings.redisClusterNodes = cluster.seeds.split(separator: ",").map(String.init) }
    settings.mongoURI = "mongodb://127.0.0.1:\(mongo.port)/notifications?maxPoolSize=3"
    let logs = InMemoryLogHandler()
    // As `serve` bootstraps it: every line logged while serving a request names its id.
    let logger = Logger(label: "test", factory: { _ in
        var handler = logs
        handler.metadataProvider = RequestID.metadataProvider
        return handler
    })
    let environment = try AppEnvironment.make(settings: settings, logger: logger, eventLoopGroup: MultiThreadedEventLoopGroup.singleton)
    try await environment.createIndexes()
    if let redisCluster = environment.redisCluster { #expect(await redisCluster.refresh(), "the cluster's slot map is read") }
    let app = Application(
        router: StreamRequestOffloading(buildRouter(environment.services)), server: .http1SmallReadBuffers(configuration: .init()),
        configuration: .init(address: .hostname("127.0.0.1", port: 0)), logger: logger)
    try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask { try await RedisRecoveryProbe(gateway: environment.gateway, interval: .milliseconds(100)).run() }
        group.addTask { try await ResumeSweeper([environment.services.events, environment.services.bulk], logger: logger).run() }
        group.addTask { try await CounterSweeper(store: environment.store, interval: .milliseconds(500)).run() }
        group.addTask { try await environment.retentionSweeper().run() }
        group.addTask { try await environment.subscriber.run() }
        group.addTask { try await environment.streamWatcher().run() }
        if let watcher = environment.sentinelWatcher { group.addTask { try await watcher.run() } }
        if let redisCluster = environment.redisCluster { group.addTask { try await redisCluster.run() } }
        try await app.test(.live) { client in
            try await test(Harness(client: client, redis: redis, mongo: mongo, environment: environment, logs: logs, cluster: cluster))
        }
        group.cancelAll()
    }
    environment.closeRedis()
    await environment.mongoPool.shutdown()
}

/// The earlier, simpler form: a client and the MongoDB server.
func withTestApp(_ test: @Sendable (any TestClientProtocol, ChildServer) async throws -> Void) async throws {
    try await withHarness { harness in try await test(harness.client, harness.mongo) }
}

extension TestClientProtocol {
    func post(_ uri: String, json: String, headers: HTTPFields = jsonHeaders) async throws -> TestResponse {
        try await execute(uri: uri, method: .post, headers: headers, body: ByteBuffer(string: json))
    }

    func get(_ uri: String, headers: HTTPFields = authorized) async throws -> TestResponse {
        try await execute(uri: uri, method: .get, headers: headers)
    }

    /// Creates a notification and returns its JSON.
    func create(recipient: String, type: String = "comment.created", title: String? = nil) async throws -> [String: Any] {
        let titleField = title.map { ",\"title\":\"\($0)\"" } ?? ""
        let response = try await post("/v1/notifications", json: "{\"recipientId\":\"\(recipient)\",\"type\":\"\(type)\"\(titleField)}")
        #expect(response.status == .created)
        return try response.jsonObject()
    }
}

extension TestResponse {
    func jsonObject() throws -> [String: Any] {
        let object = try JSONSerialization.jsonObject(with: Data(body.readableBytesView))
        guard let dictionary = object as? [String: Any] else { throw TestServerError.notReady("not a JSON object: \(String(buffer: body))") }
        return dictionary
    }

    var text: String { String(buffer: body) }
}
