import ArgumentParser
import NotificationsCore

/// `notifications check-config`: validates the environment and config file, prints the effective settings without secrets.
struct CheckConfig: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check-config", abstract: "Validate configuration (env and CONFIG_FILE) and print it without secrets.")

    func run() async throws {
        let settings = Settings.fromProcessEnvironment()
        print("configuration OK")
        print("HOST=\(settings.host) PORT=\(settings.port)")
        print("REDIS_FAIL_OPEN=\(settings.redisFailOpen) REDIS_OPERATION_TIMEOUT_MS=\(settings.redisOperationTimeoutMilliseconds)")
        print("API_KEYS names: \(settings.apiKeys.map(\.name).joined(separator: ", "))")
        print("ADMIN_TOKEN: \(settings.adminToken == nil ? "unset (admin from loopback only)" : "set")")
    }
}
