@testable import NotificationsCore
import Testing

@Suite("Domain rules")
struct ModelTests {
    @Test(arguments: [
        (Int64(0), "1970-01-01T00:00:00.000Z"), (Int64(1_795_428_000_123), "2026-11-23T10:00:00.123Z"),
        (Int64(951_782_400_999), "2000-02-29T00:00:00.999Z"), (Int64(-1), "1969-12-31T23:59:59.999Z"),
        (Int64(4_102_444_799_000), "2099-12-31T23:59:59.000Z"),
    ])
    func rfc3339(milliseconds: Int64, text: String) {
        #expect(Timestamp(milliseconds: milliseconds).rfc3339 == text)
    }

    @Test func cursorRoundTripsAndRejectsForgeries() throws {
        let cursor = FeedCursor(lastID: "6b0463ff02b616cda8863c63")
        #expect(try FeedCursor(encoded: cursor.encoded) == cursor)
        #expect(cursor.encoded.count == 16)
        for bad in ["", "abc", "!!!!!!!!!!!!!!!!", "6b0463ff02b616cda8863c63", String(repeating: "A", count: 17)] {
            #expect(throws: ValidationError.self) { try FeedCursor(encoded: bad) }
        }
    }

    @Test func idPatterns() throws {
        #expect(try Validation.userID("A-z_0.9:x@y", field: "u") == "A-z_0.9:x@y")
        for bad in ["", "a b", "a/b", "ü", String(repeating: "a", count: 129)] {
            #expect(throws: ValidationError.self) { try Validation.userID(bad, field: "u") }
        }
        #expect(try Validation.notificationType("comment.created_v2-x") == "comment.created_v2-x")
        #expect(throws: ValidationError.self) { try Validation.notificationType("Comment") }
        #expect(try Validation.notificationID("6B0463FF02B616CDA8863C63") == "6b0463ff02b616cda8863c63")
        #expect(throws: ValidationError.self) { try Validation.notificationID("6b0463ff02b616cda8863c6") }
    }

    @Test func newNotificationValidation() throws {
        let parsed = try NewNotification(json: JSONValue.parse(Array(#"{"recipientId":"a","type":"t","data":{"b":1,"a":[true,null,"x\n"]}}"#.utf8)))
        #expect(parsed.dataJSON == #"{"a":[true,null,"x\n"],"b":1}"#)
        #expect(parsed.title == nil && parsed.actorId == nil)
        let nullFields = try NewNotification(json: JSONValue.parse(Array(#"{"recipientId":"a","type":"t","title":null,"data":null}"#.utf8)))
        #expect(nullFields.title == nil && nullFields.dataJSON == "{}")
        let emoji = String(repeating: "👍🏽", count: 200)
        #expect(try NewNotification(json: .object(["recipientId": .string("a"), "type": .string("t"), "title": .string(emoji)])).title == emoji)
    }

    @Test func jsonWriterEscapes() {
        var writer = JSONWriter()
        writer.string("q\"b\\n\n\t\u{1}é")
        #expect(writer.string == #""q\"b\\n\n\t\u0001é""#)
    }

    @Test func rfc3339IsParsedStrictly() {
        let time = Timestamp(milliseconds: 1_795_000_123_456)
        #expect(Timestamp(rfc3339: time.rfc3339) == time, "what we print reads back")
        #expect(Timestamp(rfc3339: "1970-01-01T00:00:00Z")?.milliseconds == 0)
        #expect(Timestamp(rfc3339: "1970-01-01T02:00:00.5+02:00")?.milliseconds == 500)
        #expect(Timestamp(rfc3339: "1969-12-31t23:59:59.999999z")?.milliseconds == -1, "fractions past milliseconds are truncated")
        #expect(Timestamp(rfc3339: "2024-02-29T00:00:00Z") != nil)
        for bad in ["2026-02-29T00:00:00Z", "2026-13-01T00:00:00Z", "2026-01-01 00:00:00Z", "2026-01-01T00:00:00", "2026-01-01T24:00:00Z",
                    "2026-01-01T00:00:60Z", "2026-01-01T00:00:00.Z", "2026-01-01T00:00:00+0200", "yesterday", ""] {
            #expect(Timestamp(rfc3339: bad) == nil, "\(bad)")
        }
    }
}
