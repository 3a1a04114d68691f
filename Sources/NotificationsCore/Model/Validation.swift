/// A request that breaks a rule of the contract; `field` names the offending field.
public struct ValidationError: Error, Sendable, Equatable {
    public var field: String
    public var message: String

    public init(field: String, _ message: String) {
        self.field = field
        self.message = message
    }

    public var detail: String { "\(field): \(message)" }
}

/// The contract's input rules, in one place.
public enum Validation {
    public static let maxTitleLength = 200
    public static let maxBodyLength = 2000
    public static let maxDataBytes = 16 * 1024
    public static let maxUserIDLength = 128

    /// User and follower ids, event ids: `^[A-Za-z0-9_.:@-]{1,128}$`.
    public static func userID(_ value: String, field: String) throws(ValidationError) -> String {
        guard (1...maxUserIDLength).contains(value.utf8.count), value.utf8.allSatisfy(isUserIDByte) else {
            throw ValidationError(field: field, "must match ^[A-Za-z0-9_.:@-]{1,128}$")
        }
        return value
    }

    /// How far ahead a notification's `expiresAt` may be.
    public static let maxExpiry: Duration = .seconds(365 * 86_400)

    /// `expiresAt`: an RFC 3339 date-time after `now` and at most 365 days ahead.
    public static func expiry(_ text: String, now: Timestamp, field: String = "expiresAt") throws(ValidationError) -> Timestamp {
        guard let time = Timestamp(rfc3339: text) else { throw ValidationError(field: field, "must be an RFC 3339 date-time") }
        guard time > now else { throw ValidationError(field: field, "must be in the future") }
        guard time <= now.advanced(by: maxExpiry) else { throw ValidationError(field: field, "must be at most 365 days ahead") }
        return time
    }

    /// Notification types: `^[a-z0-9_.-]{1,64}$`.
    public static func notificationType(_ value: String, field: String = "type") throws(ValidationError) -> String {
        guard (1...64).contains(value.utf8.count), value.utf8.allSatisfy(isTypeByte) else {
            throw ValidationError(field: field, "must match ^[a-z0-9_.-]{1,64}$")
        }
        return value
    }

    /// Notification ids: a 24-hex ObjectId (lower-cased on the way in).
    public static func notificationID(_ value: String, field: String = "id") throws(ValidationError) -> String {
        guard value.utf8.count == 24, value.utf8.allSatisfy(isHexByte) else {
            throw ValidationError(field: field, "must be a 24-character hexadecimal ObjectId")
        }
        return value.lowercased()
    }

    /// Limits count characters (Unicode scalars' grapheme clusters, as a person counts them).
    public static func text(_ value: String, field: String, maxLength: Int) throws(ValidationError) -> String {
        guard value.count <= maxLength else { throw ValidationError(field: field, "must be at most \(maxLength) characters") }
        return value
    }

    private static func isUserIDByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"): true
        case UInt8(ascii: "_"), UInt8(ascii: "."), UInt8(ascii: ":"), UInt8(ascii: "@"), UInt8(ascii: "-"): true
        default: false
        }
    }

    private static func isTypeByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"): true
        case UInt8(ascii: "_"), UInt8(ascii: "."), UInt8(ascii: "-"): true
        default: false
        }
    }

    private static func isHexByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "f"), UInt8(ascii: "A")...UInt8(ascii: "F"), UInt8(ascii: "0")...UInt8(ascii: "9"): true
        default: false
        }
    }
}
