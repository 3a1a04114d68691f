import ArgumentParser
import NotificationsCore

/// `notifications check-config`: validates the environment and config file, then prints every
/// effective setting with where it came from, secrets masked.
struct CheckConfig: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check-config",
        abstract: "Validate configuration (env and CONFIG_FILE) and print the effective settings, secrets masked, with their sources.")

    func run() async throws {
        let (settings, sources) = await Settings.fromProcessEnvironmentWithSources()
        print("configuration OK")
        let width = settings.effectiveValues.map(\.name.count).max() ?? 0
        for (name, value) in settings.effectiveValues {
            let padded = name + String(repeating: " ", count: width - name.count)
            print("\(padded)  \(value.isEmpty ? "(unset)" : value)  [\(sources[name] ?? "default")]")
        }
    }
}
