import Logging
import MongoStore
import NotificationsCore
import NotificationsHTTP
import ServiceLifecycle

/// Keeps the MongoDB pool's thread pool until everything that uses it has stopped.
struct MongoPoolService: Service {
    let pool: MongoClientPool

    func run() async throws {
        try? await gracefulShutdown()
        await pool.shutdown(waitingAtMost: .milliseconds(500))
    }
}

/// Creates the indexes at start-up, retrying with backoff while MongoDB is unreachable, so
/// the service can start before its database.
struct IndexService: Service {
    let createIndexes: @Sendable () async throws -> Void
    let logger: Logger

    func run() async throws {
        var delay = Duration.milliseconds(500)
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            do {
                try await createIndexes()
                logger.info("MongoDB indexes ready")
                break
            } catch {
                logger.warning("Creating MongoDB indexes failed; retrying", metadata: ["error": "\(error)", "retry_in": "\(delay)"])
                try? await cancelWhenGracefulShutdown { [delay] in try await Task.sleep(for: delay) }
                delay = min(delay * 2, .seconds(30))
            }
        }
        try? await gracefulShutdown()
    }
}

/// Last to start, first to stop: on SIGTERM it turns readiness to 503 and gives load
/// balancers a moment to notice before the HTTP server stops accepting connections.
struct DrainService: Service {
    let health: HealthMonitor
    let streams: StreamHub
    let delay: Duration
    let logger: Logger

    func run() async throws {
        try? await gracefulShutdown()
        health.startDraining()
        // Streams end at once (after `retry: 1000`, so clients reconnect elsewhere); they do not hold the drain.
        streams.closeAll()
        logger.info("Draining: readiness is now 503", metadata: ["delay": "\(delay)"])
        try? await Task.sleep(for: delay)
    }
}
