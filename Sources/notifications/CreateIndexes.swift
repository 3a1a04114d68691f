import ArgumentParser
import Logging
import MongoStore
import NIOPosix
import NotificationsCore

/// `notifications create-indexes`: creates the MongoDB indexes (also done at start-up).
struct CreateIndexes: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "create-indexes", abstract: "Create the MongoDB indexes and exit.")

    func run() async throws {
        let settings = Settings.fromProcessEnvironment()
        let pool = try MongoClientPool(
            uriString: settings.mongoURI, operationTimeoutMilliseconds: settings.mongoOperationTimeoutMilliseconds,
            eventLoopGroup: MultiThreadedEventLoopGroup.singleton)
        do {
            try await MongoNotificationStore(pool: pool, logger: Logger(label: "notifications")).createIndexes()
        } catch {
            await pool.shutdown()
            throw error
        }
        await pool.shutdown()
        print("indexes created")
    }
}
