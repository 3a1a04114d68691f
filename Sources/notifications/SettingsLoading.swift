import Foundation
import NotificationsCore

extension Settings {
    /// Reads settings from this process's environment; a bad value prints one line naming it and exits 2.
    static func fromProcessEnvironment() async -> Settings {
        await fromProcessEnvironmentWithSources().settings
    }

    /// The settings and where each came from (`environment`, the config file, `default`).
    static func fromProcessEnvironmentWithSources() async -> (settings: Settings, sources: [String: String]) {
        do {
            return try await Settings.loadWithSources(environment: ProcessInfo.processInfo.environment) { path in
                Array(try Data(contentsOf: URL(fileURLWithPath: path)))
            }
        } catch {
            FileHandle.standardError.write(Data("notifications: \(error)\n".utf8))
            exit(2)
        }
    }
}
