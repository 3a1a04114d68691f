import ArgumentParser
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
        defer { Task { await pool.shutdown() } }
        try await MongoNotificationStore(pool: pool).createIndexes()
        print("indexes created")
    }
}
