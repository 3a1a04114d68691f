import ArgumentParser
import Foundation
import Hummingbird
import Logging
import NIOPosix
import NotificationsCore
import NotificationsHTTP
import RedisClient
import Resilience
import ServiceLifecycle
import UnixSignals

/// `notifications serve`: runs the HTTP service until SIGTERM/SIGINT, then drains and exits 0.
struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "serve", abstract: "Run the HTTP service.")

    func run() async throws {
        let settings = await Settings.fromProcessEnvironment()
        LoggingSystem.bootstrap({ label, metadataProvider in
            switch settings.logFormat {
            case .json:
                return JSONLogHandler(label: label, level: settings.logLevel, metadataProvider: metadataProvider)
            case .text:
                var handler = StreamLogHandler.standardOutput(label: label, metadataProvider: metadataProvider)
                handler.logLevel = settings.logLevel
                return DeferredMetadataLogHandler(handler)
            }
        }, metadataProvider: RequestID.metadataProvider)
        let logger = Logger(label: "notifications")
        if settings.apiKeys.isEmpty { logger.warning("API_KEYS is empty: every /v1 request will be rejected with 401") }

        let environment = try AppEnvironment.make(settings: settings, logger: logger, eventLoopGroup: MultiThreadedEventLoopGroup.singleton)
        let app = Application(
            router: StreamRequestOffloading(buildRouter(environment.services)),
            // A connection that sends nothing for 30 s is closed (a stalled body must not hold a
            // drain forever); receive buffers start small (an idle stream keeps its own).
            server: .http1SmallReadBuffers(configuration: .init(idleTimeout: .seconds(30))),
            configuration: .init(address: .hostname(settings.host, port: settings.port), serverName: "notifications"),
            onServerRunning: { channel in logger.info("Listening", metadata: ["address": "\(channel.localAddress?.description ?? "?")"]) },
            logger: logger)

        // The indexes before the first request when MongoDB answers within a few seconds: a fresh
        // dev database answers "busy" to every request while it builds them. If MongoDB is not
        // there yet, the service starts anyway (degraded) and IndexService goes on trying.
        let indexed = await firstOf({ [environment] in (try? await environment.createIndexes()) != nil }, orAfter: .seconds(5), fallback: false)
        if indexed { logger.info("MongoDB indexes ready") }

        // The slot map before the first request (the cluster's run loop goes on reading it).
        if let cluster = environment.redisCluster, !(await cluster.refresh()) {
            logger.warning("Redis Cluster map not read at start-up; Redis calls fall back until it is")
        }

        let grace = Duration.seconds(settings.shutdownGraceSeconds)
        // Started in this order; on SIGTERM stopped in reverse: drain (readiness 503), then the
        // HTTP server finishes in-flight requests, then the background tasks and the pools.
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = [
                .init(service: MongoPoolService(pool: environment.mongoPool)),
                .init(service: environment.redisService),
                .init(service: environment.subscriber),
                .init(service: environment.streamWatcher()),
                .init(service: RedisRecoveryProbe(gateway: environment.gateway)),
                .init(service: ResumeSweeper([environment.services.events, environment.services.bulk], logger: logger)),
                .init(service: CounterSweeper(store: environment.store)),
                .init(service: environment.retentionSweeper()),
                .init(service: app),
                .init(service: DrainService(
                    health: environment.services.health, streams: environment.services.streams, delay: min(.seconds(1), grace / 2), logger: logger)),
            ]
        if !indexed { services.insert(.init(service: IndexService(createIndexes: environment.createIndexes, logger: logger)), at: 3) }
        if let watcher = environment.sentinelWatcher { services.insert(.init(service: watcher), at: 3) }
        var configuration = ServiceGroupConfiguration(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        // From SIGTERM, everything (drain pause included) gets SHUTDOWN_GRACE_SECONDS; then
        // what still runs is cancelled (its request answered 503) and the process exits 0.
        configuration.maximumGracefulShutdownDuration = grace
        let serviceGroup = ServiceGroup(configuration: configuration)
        do {
            try await serviceGroup.run()
        } catch where environment.services.health.isDraining {
            // SIGTERM, then a request outlived SHUTDOWN_GRACE_SECONDS and was cancelled: still a clean stop.
            logger.warning("Shut down after cancelling what outlived SHUTDOWN_GRACE_SECONDS", metadata: ["error": "\(error)"])
        } catch {
            logger.error("Service stopped with an error", metadata: ["error": "\(error)"])
            throw ExitCode.failure
        }
        logger.info("Shut down cleanly")
    }
}
