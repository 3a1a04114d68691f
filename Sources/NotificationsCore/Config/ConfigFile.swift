internal import Configuration
internal import SystemPackage

/// `CONFIG_FILE`: a JSON object whose keys are the env names (`{"PORT": 8080, ...}`), plus
/// `routeGroupPolicies` (`{"read": "*:200/1s", "write": "*:20/1s"}`). swift-configuration reads
/// it (`FileProvider<JSONSnapshot>`); this type only checks what the provider cannot: that every
/// key is one this service knows (a misspelt key is caught at start-up, not ignored) and that
/// values are strings, integers or booleans.
enum ConfigFile {
    static let routeGroupPoliciesKey = "routeGroupPolicies"

    /// The provider for `path`, after checking its keys; every problem names `CONFIG_FILE` or the key.
    static func provider(path: String, readFile: (String) throws -> [UInt8]) async throws(SettingsError) -> FileProvider<JSONSnapshot> {
        let bytes: [UInt8]
        do {
            bytes = try readFile(path)
        } catch {
            throw SettingsError(variable: "CONFIG_FILE", reason: "cannot read \(path)")
        }
        try check(bytes, path: path)
        do {
            return try await FileProvider<JSONSnapshot>(filePath: FilePath(path))
        } catch {
            throw SettingsError(variable: "CONFIG_FILE", reason: "\(path) cannot be read as JSON configuration")
        }
    }

    static func check(_ bytes: [UInt8], path: String) throws(SettingsError) {
        guard let json = try? JSONValue.parse(bytes) else {
            throw SettingsError(variable: "CONFIG_FILE", reason: "\(path) is not valid JSON")
        }
        guard case .object(let members) = json else {
            throw SettingsError(variable: "CONFIG_FILE", reason: "\(path) must hold a JSON object")
        }
        for (key, value) in members {
            if key == routeGroupPoliciesKey {
                guard case .object(let groups) = value,
                    groups.allSatisfy({ RouteGroup(rawValue: $0.key) != nil && $0.value.isString })
                else {
                    throw SettingsError(variable: key, reason: "in \(path) must be an object like {\"read\": \"*:200/1s\", \"write\": \"*:20/1s\"}")
                }
                continue
            }
            guard Settings.variableNames.contains(key), key != "CONFIG_FILE" else {
                throw SettingsError(variable: "CONFIG_FILE", reason: "\(path): unknown key \"\(key)\"")
            }
            switch value {
            case .string, .integer, .bool: break
            case .number, .null, .object, .array:
                throw SettingsError(variable: key, reason: "in \(path) must be a string, integer or boolean")
            }
        }
    }
}

extension JSONValue {
    fileprivate var isString: Bool {
        if case .string = self { true } else { false }
    }
}
