import Foundation
import NotificationsCore

extension Settings {
    /// Reads settings from this process's environment; a bad value prints one line naming it and exits 2.
    static func fromProcessEnvironment() -> Settings {
        do {
            return try Settings.load(environment: ProcessInfo.processInfo.environment) { path in
                Array(try Data(contentsOf: URL(fileURLWithPath: path)))
            }
        } catch {
            FileHandle.standardError.write(Data("notifications: \(error)\n".utf8))
            exit(2)
        }
    }
}
