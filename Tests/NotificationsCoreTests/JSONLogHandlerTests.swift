import Foundation
import Logging
import NotificationsCore
import Synchronization
import Testing

@Suite("JSON log lines")
struct JSONLogHandlerTests {
    final class Lines: Sendable {
        let captured = Mutex<[String]>([])
        var all: [String] { captured.withLock { $0 } }
    }

    @Test func oneObjectPerLineWithTimestampLevelMessageAndMergedMetadata() throws {
        let lines = Lines()
        let output = JSONLogOutput { line in lines.captured.withLock { $0.append(line) } }
        var logger = Logger(label: "notifications") { label in
            JSONLogHandler(label: label, level: .info, metadataProvider: RequestID.metadataProvider, output: output)
        }
        logger[metadataKey: "component"] = "test"
        RequestID.$current.withValue("req-1") {
            logger.warning("Store \"unavailable\"\nsecond line", metadata: ["error": "timeout", "nested": ["a": "1"]])
        }
        logger.debug("below the level")
        logger.info("outside a request")

        #expect(lines.all.count == 2)
        #expect(lines.all.allSatisfy { $0.hasSuffix("\n") && $0.dropLast().firstIndex(of: "\n") == nil }, "one line each")
        let first = try #require(JSONSerialization.jsonObject(with: Data(lines.all[0].utf8)) as? [String: Any])
        #expect(first["level"] as? String == "warning")
        #expect(first["message"] as? String == "Store \"unavailable\"\nsecond line")
        #expect(first["label"] as? String == "notifications")
        let timestamp = try #require(first["timestamp"] as? String)
        #expect(timestamp.wholeMatch(of: /\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z/) != nil, "\(timestamp)")
        let metadata = try #require(first["metadata"] as? [String: Any])
        #expect(metadata["request_id"] as? String == "req-1")
        #expect(metadata["component"] as? String == "test" && metadata["error"] as? String == "timeout")
        #expect((metadata["nested"] as? [String: Any])?["a"] as? String == "1")
        let second = try #require(JSONSerialization.jsonObject(with: Data(lines.all[1].utf8)) as? [String: Any])
        #expect((second["metadata"] as? [String: Any])?["request_id"] == nil)
    }
}
