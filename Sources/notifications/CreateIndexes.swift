import ArgumentParser
import Logging
import MongoStore
import NIOPosix
import NotificationsCore
import NotificationsHTTP

/// `notifications create-indexes`: creates the MongoDB indexes (also done at start-up).
struct CreateIndexes: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "create-indexes", abstract: "Create the MongoDB indexes and exit.")

    func run() async throws {
        let settings = await Settings.fromProcessEnvironment()
        let environment = try AppEnvironment.make(
            settings: settings, logger: Logger(label: "notifications"), eventLoopGroup: MultiThreadedEventLoopGroup.singleton)
        do {
            try await environment.createIndexes()
        } catch {
            await environment.mongoPool.shutdown()
            throw error
        }
        await environment.mongoPool.shutdown()
        print("indexes created")
    }
}
