internal import Configuration

/// Reads one variable through swift-configuration as the text `SettingsReader` parses, so
/// every value is validated in one place with one kind of error, whichever provider gave it.
struct ConfigLookup {
    let reader: ConfigReader
    let recorder: ConfigSources

    /// The value and the provider that gave it, or nil when no provider has one. Environment
    /// values are text; the config file may hold integers and booleans, which are asked for
    /// as such (a JSON number is not a string) and written back as text.
    func value(_ name: String, isSecret: Bool) throws(SettingsError) -> (String, String)? {
        let key = ConfigKey(name.split(separator: ".").map(String.init))
        if let text = reader.string(forKey: key, isSecret: isSecret) { return answer(text, name) }
        guard recorder.record(name)?.failed == true else { return nil }
        if let number = reader.int(forKey: key, isSecret: isSecret) { return answer(String(number), name) }
        if let flag = reader.bool(forKey: key, isSecret: isSecret) { return answer(flag ? "true" : "false", name) }
        throw SettingsError(variable: name, reason: "must be a string, integer or boolean")
    }

    private func answer(_ text: String, _ name: String) -> (String, String) {
        (text, recorder.record(name)?.provider ?? "default")
    }
}
