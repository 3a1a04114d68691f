/// The opaque `cursor` of a follower page: the last follower id served, base64url-encoded.
///
/// A cursor is only a position (followers after it, in id order), so any base64url text of at
/// most 172 characters (128 bytes) is one: the API document can then say exactly what is
/// accepted (`^[A-Za-z0-9_-]{0,172}$`), and a hand-made cursor still pages correctly.
public struct FollowerCursor: Sendable, Equatable {
    public var lastFollowerID: String

    public init(lastFollowerID: String) {
        self.lastFollowerID = lastFollowerID
    }

    public var encoded: String { Base64URL.encode(Array(lastFollowerID.utf8)) }

    public static let maxEncodedLength = 172

    public init(encoded: String) throws(ValidationError) {
        guard encoded.utf8.count <= Self.maxEncodedLength, let bytes = Base64URL.decode(encoded) else {
            throw ValidationError(field: "cursor", "must be base64url text of at most \(Self.maxEncodedLength) characters (a nextCursor)")
        }
        lastFollowerID = String(decoding: bytes, as: UTF8.self)
    }
}
