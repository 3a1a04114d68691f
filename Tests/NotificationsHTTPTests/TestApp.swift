import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import MongoStore
import NIOCore
import NIOPosix
import NotificationsCore
import NotificationsHTTP
import Testing
import TestSupport

let apiKey = "test-secret"
let authorized: HTTPFields = [.authorization: "Bearer \(apiKey)"]
let jsonHeaders: HTTPFields = [.authorization: "Bearer \(apiKey)", .contentType: "application/json"]

/// The real router on a live HTTP server, over a real MongoDB-wire server started for the test.
func withTestApp(_ test: @Sendable (any TestClientProtocol, ChildServer) async throws -> Void) async throws {
    let mongoServer = try await TestServers.startMongo()
    defer { mongoServer.stop() }
    let pool = try MongoClientPool(
        uriString: "mongodb://127.0.0.1:\(mongoServer.port)/notifications?maxPoolSize=3", operationTimeoutMilliseconds: 1500,
        eventLoopGroup: MultiThreadedEventLoopGroup.singleton)
    let logger = Logger(label: "test")
    let store = MongoNotificationStore(pool: pool, logger: logger)
    try await store.createIndexes()
    var settings = Settings()
    settings.apiKeys = [APIKey(name: "test", secret: apiKey), APIKey(name: "other", secret: "other-secret")]
    let health = HealthMonitor(mongoPing: { await pool.ping(timeout: .milliseconds(500)) }, redisPing: { false })
    let services = AppServices(settings: settings, feed: NotificationFeed(store: store, logger: logger), health: health)
    let app = Application(router: buildRouter(services), configuration: .init(address: .hostname("127.0.0.1", port: 0)), logger: logger)
    try await app.test(.live) { client in try await test(client, mongoServer) }
    await pool.shutdown()
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
