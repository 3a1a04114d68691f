import Logging
import NotificationsCore
import Synchronization
import Testing

@Suite("Log metadata handed over only when a line is written")
struct DeferredMetadataLogHandlerTests {
    /// Records how often its metadata is set and what each logged line carried.
    struct Recorder: LogHandler {
        final class Seen: Sendable {
            let sets = Atomic(0)
            let lines = Mutex<[(Logger.Level, String, Logger.Metadata)]>([])
        }
        let seen: Seen
        var logLevel: Logger.Level = .info
        var metadataProvider: Logger.MetadataProvider?
        var metadata: Logger.Metadata = [:] {
            didSet { seen.sets.add(1, ordering: .relaxed) }
        }

        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }

        func log(event: LogEvent) {
            var merged = metadata
            if let provided = metadataProvider?.get() { merged.merge(provided) { _, new in new } }
            if let explicit = event.metadata { merged.merge(explicit) { _, new in new } }
            seen.lines.withLock { $0.append((event.level, event.message.description, merged)) }
        }
    }

    @Test func setsCostNothingUntilALineIsLoggedWhichCarriesEverything() {
        let seen = Recorder.Seen()
        var logger = Logger(label: "test") { _ in DeferredMetadataLogHandler(Recorder(seen: seen)) }
        for request in 0..<100 { logger[metadataKey: "hb.request.id"] = "\(request)" }
        logger[metadataKey: "component"] = "feed"
        #expect(seen.sets.load(ordering: .relaxed) == 0)

        logger.debug("below the level")
        logger.warning("written", metadata: ["error": "timeout"])
        let lines = seen.lines.withLock { $0 }
        #expect(lines.count == 1)
        #expect(lines.first?.0 == .warning)
        #expect(lines.first?.1 == "written")
        #expect(lines.first?.2 == ["hb.request.id": "99", "component": "feed", "error": "timeout"])
        #expect(logger[metadataKey: "component"] == "feed")

        logger.logLevel = .debug
        logger.debug("now at the level")
        #expect(seen.lines.withLock { $0.count } == 2)
    }

    @Test func theMetadataProviderStillReachesTheLine() {
        let seen = Recorder.Seen()
        let provider = Logger.MetadataProvider { ["request_id": "req-1"] }
        let logger = Logger(label: "test") { _ in
            var recorder = Recorder(seen: seen)
            recorder.metadataProvider = provider
            return DeferredMetadataLogHandler(recorder)
        }
        logger.info("with the provider")
        #expect(seen.lines.withLock { $0.first?.2["request_id"] } == "req-1")
    }
}
