/// The opaque `cursor` of a follower page: the last follower id served, base64url-encoded.
public struct FollowerCursor: Sendable, Equatable {
    public var lastFollowerID: String

    public init(lastFollowerID: String) {
        self.lastFollowerID = lastFollowerID
    }

    public var encoded: String { Base64URL.encode(Array(lastFollowerID.utf8)) }

    public init(encoded: String) throws(ValidationError) {
        guard encoded.utf8.count <= 200, let bytes = Base64URL.decode(encoded),
            let id = try? Validation.userID(String(decoding: bytes, as: UTF8.self), field: "cursor")
        else { throw ValidationError(field: "cursor", "is not a cursor this service issued") }
        lastFollowerID = id
    }
}
