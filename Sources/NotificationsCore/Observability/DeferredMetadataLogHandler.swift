public import Logging

/// Keeps a logger's metadata as it is set and hands it to the wrapped handler only when a line
/// is written.
///
/// Hummingbird sets `hb.request.id` on every request's logger, and swift-log's
/// `StreamLogHandler` renders its whole metadata to text on every set: each request paid for
/// a log line it mostly never writes (2.5% of a cached read's CPU, see docs/PERFORMANCE.md).
/// Here a set is a dictionary write; the rendering happens once per line actually logged.
public struct DeferredMetadataLogHandler<Wrapped: LogHandler>: LogHandler {
    private var wrapped: Wrapped
    public var metadata: Logger.Metadata

    public init(_ wrapped: Wrapped) {
        self.wrapped = wrapped
        self.metadata = wrapped.metadata
    }

    public var logLevel: Logger.Level {
        get { wrapped.logLevel }
        set { wrapped.logLevel = newValue }
    }

    public var metadataProvider: Logger.MetadataProvider? {
        get { wrapped.metadataProvider }
        set { wrapped.metadataProvider = newValue }
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var handler = wrapped
        handler.metadata = metadata
        handler.log(event: event)
    }
}
