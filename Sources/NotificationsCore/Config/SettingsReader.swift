internal import Logging
internal import RedisClient

/// Parses one variable at a time, turning every problem into a `SettingsError` naming it.
/// Secrets (keys, tokens, URL passwords) never appear in the error text.
struct SettingsReader {
    let values: [String: String]

    private func value(_ name: String) -> String? {
        values[name].map { $0.trimmingSpaces }.flatMap { $0.isEmpty ? nil : $0 }
    }

    func string(_ name: String, default fallback: String) throws(SettingsError) -> String {
        value(name) ?? fallback
    }

    func integer<T: FixedWidthInteger>(_ name: String, default fallback: T, in range: ClosedRange<T>) throws(SettingsError) -> T {
        guard let text = value(name) else { return fallback }
        guard let number = T(text), range.contains(number) else {
            throw SettingsError(variable: name, reason: "must be an integer from \(range.lowerBound) to \(range.upperBound), got \"\(text)\"")
        }
        return number
    }

    func bool(_ name: String, default fallback: Bool) throws(SettingsError) -> Bool {
        guard let text = value(name) else { return fallback }
        switch text.lowercased() {
        case "true", "1", "yes", "on": return true
        case "false", "0", "no", "off": return false
        default: throw SettingsError(variable: name, reason: "must be true or false, got \"\(text)\"")
        }
    }

    func redisURL(_ name: String, default fallback: String) throws(SettingsError) -> String {
        let url = value(name) ?? fallback
        do {
            _ = try RedisConfiguration(url: url)
        } catch {
            throw SettingsError(variable: name, reason: "\(error) (expected redis://[:password@]host[:port][/db])")
        }
        return url
    }

    func mongoURI(_ name: String, default fallback: String) throws(SettingsError) -> String {
        let uri = value(name) ?? fallback
        guard uri.hasPrefix("mongodb://") || uri.hasPrefix("mongodb+srv://"), uri.count > "mongodb://".count else {
            throw SettingsError(variable: name, reason: "must be a mongodb:// or mongodb+srv:// URI")
        }
        return uri
    }

    /// `host:port,host:port`.
    func addressList(_ name: String) throws(SettingsError) -> [String] {
        guard let text = value(name) else { return [] }
        let entries = text.split(separator: ",").map(\.trimmingSpaces)
        for (index, entry) in entries.enumerated() where RedisAddress(parsing: entry) == nil {
            throw SettingsError(variable: name, reason: "entry \(index + 1) must be host:port")
        }
        return entries
    }

    func optionalSecret(_ name: String) throws(SettingsError) -> String? {
        value(name)
    }

    /// `name:secret,name:secret`; names and secrets non-empty, names unique.
    func apiKeys(_ name: String) throws(SettingsError) -> [APIKey] {
        try namedSecrets(name, what: "key").map { APIKey(name: $0.name, secret: $0.secret) }
    }

    /// `kid:secret,kid:secret` (`USER_TOKEN_KEYS`): as API keys, and each secret at least
    /// `UserTokenKey.minimumSecretBytes` long (an HS256 key shorter than its hash is weak).
    func userTokenKeys(_ name: String) throws(SettingsError) -> [UserTokenKey] {
        try namedSecrets(name, what: "kid").map { entry throws(SettingsError) in
            guard entry.secret.utf8.count >= UserTokenKey.minimumSecretBytes else {
                throw SettingsError(variable: name, reason: "the secret of \"\(entry.name)\" must be at least \(UserTokenKey.minimumSecretBytes) bytes")
            }
            return UserTokenKey(kid: entry.name, secret: entry.secret)
        }
    }

    private func namedSecrets(_ name: String, what: String) throws(SettingsError) -> [(name: String, secret: String)] {
        guard let text = value(name) else { return [] }
        var entries: [(name: String, secret: String)] = []
        for (index, entry) in text.split(separator: ",", omittingEmptySubsequences: false).enumerated() {
            let parts = entry.trimmingSpaces.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
            guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty,
                parts[0].utf8.allSatisfy({ $0 > 32 && $0 < 127 }), parts[1].utf8.allSatisfy({ $0 > 32 && $0 < 127 })
            else {
                throw SettingsError(variable: name, reason: "entry \(index + 1) must be \(what):secret (printable ASCII, no spaces)")
            }
            guard !entries.contains(where: { $0.name == String(parts[0]) }) else {
                throw SettingsError(variable: name, reason: "\(what) \"\(parts[0])\" appears twice")
            }
            entries.append((String(parts[0]), String(parts[1])))
        }
        return entries
    }

    /// Comma-separated exact origins (`CORS_ALLOWED_ORIGINS`): `scheme://host[:port]`, no path,
    /// no wildcard (the contract never answers `*`).
    func origins(_ name: String) throws(SettingsError) -> [String] {
        guard let text = value(name) else { return [] }
        var origins: [String] = []
        for entry in text.split(separator: ",").map({ String($0.trimmingSpaces) }) where !entry.isEmpty {
            let scheme = entry.hasPrefix("https://") ? "https://" : entry.hasPrefix("http://") ? "http://" : nil
            guard let scheme, entry.count > scheme.count, !entry.dropFirst(scheme.count).contains("/"), !entry.contains("*"),
                entry.utf8.allSatisfy({ $0 > 32 && $0 < 127 })
            else {
                throw SettingsError(variable: name, reason: "\"\(entry)\" is not an origin (scheme://host[:port], no path, no wildcard)")
            }
            if !origins.contains(entry) { origins.append(entry) }
        }
        return origins
    }

    func policies(_ name: String, default fallback: [RateLimitPolicy]) throws(SettingsError) -> [RateLimitPolicy] {
        guard let text = value(name) else { return fallback }
        do {
            return try RateLimitPolicy.parseList(text)
        } catch {
            throw SettingsError(variable: name, reason: error.message)
        }
    }

    /// The config file's `routeGroupPolicies` (`{"read": "*:200/1s", "write": "*:20/1s"}`),
    /// read as `routeGroupPolicies.read` and `routeGroupPolicies.write`.
    func routeGroupPolicies(_ name: String) throws(SettingsError) -> [RouteGroup: [RateLimitPolicy]] {
        var groups: [RouteGroup: [RateLimitPolicy]] = [:]
        for group in RouteGroup.allCases {
            let key = "\(name).\(group.rawValue)"
            guard let list = value(key) else { continue }
            do {
                groups[group] = try RateLimitPolicy.parseList(list)
            } catch {
                throw SettingsError(variable: key, reason: error.message)
            }
        }
        return groups
    }

    func choice<T: RawRepresentable & CaseIterable>(_ name: String, default fallback: T) throws(SettingsError) -> T where T.RawValue == String {
        guard let text = value(name) else { return fallback }
        guard let choice = T(rawValue: text.lowercased()) else {
            throw SettingsError(variable: name, reason: "must be one of \(T.allCases.map(\.rawValue).joined(separator: ", ")), got \"\(text)\"")
        }
        return choice
    }

    func logLevel(_ name: String, default fallback: Logger.Level) throws(SettingsError) -> Logger.Level {
        guard let text = value(name) else { return fallback }
        guard let level = Logger.Level(rawValue: text.lowercased()) else {
            let names = "trace, debug, info, notice, warning, error, critical"
            throw SettingsError(variable: name, reason: "must be one of \(names), got \"\(text)\"")
        }
        return level
    }
}

extension StringProtocol {
    var trimmingSpaces: String {
        let scalars = unicodeScalars
        let start = scalars.firstIndex { !$0.properties.isWhitespace } ?? scalars.endIndex
        let end = scalars.lastIndex { !$0.properties.isWhitespace }.map { scalars.index(after: $0) } ?? start
        return String(String.UnicodeScalarView(scalars[start..<Swift.max(start, end)]))
    }
}
