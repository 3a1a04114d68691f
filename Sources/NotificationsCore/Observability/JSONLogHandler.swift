#if canImport(Glibc)
private import Glibc
#endif
public import Logging
internal import Synchronization

/// `LOG_FORMAT=json`: one JSON object per line on standard output, the shape log shippers
/// (Vector, Fluent Bit, Loki, Elasticsearch) parse without configuration:
/// `{"timestamp":"2026-11-25T10:00:00.123Z","level":"info","label":"notifications","message":"...","metadata":{...}}`.
/// Metadata comes from the logger, its metadata provider (the request id) and the call site,
/// later ones winning, as swift-log's own handlers merge it.
public struct JSONLogHandler: LogHandler {
    public var logLevel: Logger.Level
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    private let label: String
    private let output: JSONLogOutput

    public init(label: String, level: Logger.Level, metadataProvider: Logger.MetadataProvider?, output: JSONLogOutput = .standardOutput) {
        self.label = label
        self.logLevel = level
        self.metadataProvider = metadataProvider
        self.output = output
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var merged = metadata
        if let provided = metadataProvider?.get() { merged.merge(provided) { _, new in new } }
        if let explicit = event.metadata { merged.merge(explicit) { _, new in new } }
        output.write(Self.line(
            timestamp: SystemWallClock().now(), level: event.level, label: label, message: event.message.description, metadata: merged))
    }

    /// One log line, newline included.
    static func line(timestamp: Timestamp, level: Logger.Level, label: String, message: String, metadata: Logger.Metadata) -> String {
        var writer = JSONWriter()
        writer.object { object in
            object.string("timestamp", timestamp.rfc3339)
            object.string("level", level.rawValue)
            object.string("label", label)
            object.string("message", message)
            if !metadata.isEmpty {
                object.value("metadata", Self.json(.dictionary(metadata)))
            }
        }
        return writer.string + "\n"
    }

    private static func json(_ value: Logger.Metadata.Value) -> JSONValue {
        switch value {
        case .string(let text): .string(text)
        case .stringConvertible(let convertible): .string(convertible.description)
        case .array(let values): .array(values.map(json))
        case .dictionary(let members): .object(members.mapValues(json))
        }
    }
}

/// Where JSON lines go: a whole line per `write`, under a lock, so lines from concurrent tasks never interleave.
public final class JSONLogOutput: Sendable {
    private let lock = Mutex<Void>(())
    private let sink: @Sendable (String) -> Void

    public init(sink: @escaping @Sendable (String) -> Void) {
        self.sink = sink
    }

    /// Unbuffered writes to file descriptor 1: a line is out when `log` returns (nothing lost if the process dies).
    public static let standardOutput = JSONLogOutput { line in
        var bytes = Array(line.utf8)[...]
        while !bytes.isEmpty {
            let written = bytes.withUnsafeBytes { Glibc.write(STDOUT_FILENO, $0.baseAddress, $0.count) }
            if written > 0 {
                bytes = bytes.dropFirst(written)
            } else if written < 0 && errno == EINTR {
                continue
            } else {
                return  // stdout closed or broken: logging must never take the service down
            }
        }
    }

    func write(_ line: String) {
        lock.withLock { _ in sink(line) }
    }
}
