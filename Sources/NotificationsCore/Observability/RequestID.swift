public import Logging

/// The id of the request a task works for, carried as a task local so that every log line
/// written while serving it (by any component, with any logger) names it: the logging
/// system's metadata provider adds it as `request_id`, and the API key's name as `api_key`.
/// Task locals cost nothing until a line is logged; setting a logger's metadata per request
/// copies its metadata dictionary every time (it showed in profiles of the cached read).
public enum RequestID {
    @TaskLocal public static var current: String?
    /// The name (never the secret) of the API key the request authenticated with.
    @TaskLocal public static var apiKeyName: String?

    /// Install with `LoggingSystem.bootstrap(_:metadataProvider:)`.
    public static let metadataProvider = Logger.MetadataProvider {
        var metadata: Logger.Metadata = [:]
        if let current { metadata["request_id"] = .string(current) }
        if let apiKeyName { metadata["api_key"] = .string(apiKeyName) }
        return metadata
    }

    /// A client-sent id is kept only if short and plain (1–128 visible ASCII characters), so it
    /// can neither forge log lines nor grow them without bound.
    public static func sanitized(_ id: String) -> String? {
        id.utf8.count <= 128 && !id.isEmpty && id.utf8.allSatisfy({ $0 > 32 && $0 < 127 }) ? id : nil
    }
}
