/// `CONFIG_FILE`: a flat JSON object whose keys are the env names (`{"PORT": 8080, ...}`).
///
/// Strings, numbers and booleans are accepted and read exactly like env values.
/// Keys this service does not know are rejected, so a misspelt key is caught at start-up.
enum ConfigFile {
    /// Keys that are not env variables but belong in the file (read by other features).
    static let extraKeys: Set<String> = ["routeGroupPolicies"]

    static func values(path: String, readFile: (String) throws -> [UInt8]) throws(SettingsError) -> [String: String] {
        let bytes: [UInt8]
        do {
            bytes = try readFile(path)
        } catch {
            throw SettingsError(variable: "CONFIG_FILE", reason: "cannot read \(path)")
        }
        let json: JSONValue
        do {
            json = try JSONValue.parse(bytes)
        } catch {
            throw SettingsError(variable: "CONFIG_FILE", reason: "\(path) is not valid JSON")
        }
        guard case .object(let members) = json else {
            throw SettingsError(variable: "CONFIG_FILE", reason: "\(path) must hold a JSON object")
        }
        var values: [String: String] = [:]
        for (key, value) in members {
            guard Settings.variableNames.contains(key) || extraKeys.contains(key), key != "CONFIG_FILE" else {
                throw SettingsError(variable: "CONFIG_FILE", reason: "\(path): unknown key \"\(key)\"")
            }
            switch value {
            case .string(let text): values[key] = text
            case .integer(let number): values[key] = String(number)
            case .bool(let flag): values[key] = flag ? "true" : "false"
            case .object, .array:
                var writer = JSONWriter()
                writer.value(value)
                values[key] = writer.string
            case .number, .null:
                throw SettingsError(variable: key, reason: "in \(path) must be a string, integer or boolean")
            }
        }
        return values
    }
}
