import ArgumentParser

/// `notifications`: the service's executable.
@main
struct NotificationsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "notifications",
        abstract: "A notifications service over Redis and MongoDB that keeps working when Redis fails.",
        subcommands: [Serve.self, CheckConfig.self, CreateIndexes.self]
    )
}
