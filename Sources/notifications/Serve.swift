import ArgumentParser
import Foundation
import Hummingbird
import Logging
import MongoStore
import NIOPosix
import NotificationsCore
import NotificationsHTTP
import RedisClient
import ServiceLifecycle
import UnixSignals

/// `notifications serve`: runs the HTTP service until SIGTERM/SIGINT, then drains and exits 0.
struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "serve", abstract: "Run the HTTP service.")

    func run() async throws {
        let settings = Settings.fromProcessEnvironment()
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardOutput(label: label)
            handler.logLevel = settings.logLevel
            return handler
        }
        let logger = Logger(label: "notifications")
        if settings.apiKeys.isEmpty { logger.warning("API_KEYS is empty: every /v1 request will be rejected with 401") }

        let group = MultiThreadedEventLoopGroup.singleton
        let redis = RedisConnectionPool(
            configuration: try RedisConfiguration(url: settings.redisURL, operationTimeoutMilliseconds: settings.redisOperationTimeoutMilliseconds),
            eventLoopGroup: group, logger: logger)
        let mongo = try MongoClientPool(
            uriString: settings.mongoURI, operationTimeoutMilliseconds: settings.mongoOperationTimeoutMilliseconds, eventLoopGroup: group)
        let store = MongoNotificationStore(pool: mongo, logger: logger)
        let health = HealthMonitor(
            mongoPing: { await mongo.ping(timeout: .milliseconds(min(settings.mongoOperationTimeoutMilliseconds, 2000))) },
            redisPing: { await redis.ping(timeout: .milliseconds(min(settings.redisOperationTimeoutMilliseconds, 1000))) })
        let services = AppServices(settings: settings, feed: NotificationFeed(store: store, logger: logger), health: health)

        let app = Application(
            router: buildRouter(services),
            configuration: .init(address: .hostname(settings.host, port: settings.port), serverName: "notifications"),
            onServerRunning: { channel in logger.info("Listening", metadata: ["address": "\(channel.localAddress?.description ?? "?")"]) },
            logger: logger)

        let grace = Duration.seconds(settings.shutdownGraceSeconds)
        // Started in this order; on SIGTERM stopped in reverse: drain (readiness 503), then the
        // HTTP server finishes in-flight requests, then the index task, Redis and MongoDB pools.
        let serviceGroup = ServiceGroup(
            configuration: .init(
                services: [
                    .init(service: MongoPoolService(pool: mongo)),
                    .init(service: redis),
                    .init(service: IndexService(store: store, logger: logger)),
                    .init(service: app),
                    .init(service: DrainService(health: health, delay: min(.seconds(1), grace / 2), logger: logger)),
                ],
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger))
        do {
            try await serviceGroup.run()
        } catch {
            logger.error("Service stopped with an error", metadata: ["error": "\(error)"])
            throw ExitCode.failure
        }
        logger.info("Shut down cleanly")
    }
}
