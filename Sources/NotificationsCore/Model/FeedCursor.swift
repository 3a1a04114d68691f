/// The opaque `cursor` of a feed page: the id of the last item served, base64url-encoded.
///
/// Pages are "ids strictly below the cursor", and ids are unique and ordered by creation
/// time, so paging while new notifications arrive yields no duplicates and no gaps.
public struct FeedCursor: Sendable, Equatable {
    public var lastID: String

    public init(lastID: String) {
        self.lastID = lastID
    }

    public var encoded: String {
        Base64URL.encode(hexBytes(lastID))
    }

    public init(encoded: String) throws(ValidationError) {
        guard encoded.utf8.count == 16, let bytes = Base64URL.decode(encoded), bytes.count == 12 else {
            throw ValidationError(field: "cursor", "is not a cursor this service issued")
        }
        lastID = bytes.map { byte in String(byte, radix: 16).count == 1 ? "0" + String(byte, radix: 16) : String(byte, radix: 16) }.joined()
    }

    private func hexBytes(_ hex: String) -> [UInt8] {
        var bytes: [UInt8] = []
        var index = hex.startIndex
        while index < hex.endIndex, let next = hex.index(index, offsetBy: 2, limitedBy: hex.endIndex) {
            bytes.append(UInt8(hex[index..<next], radix: 16) ?? 0)
            index = next
        }
        return bytes
    }
}

/// Unpadded base64url (RFC 4648 §5).
enum Base64URL {
    private static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)

    static func encode(_ bytes: [UInt8]) -> String {
        var out: [UInt8] = []
        var index = 0
        while index < bytes.count {
            let chunk = Array(bytes[index..<min(index + 3, bytes.count)])
            let value = chunk.enumerated().reduce(UInt32(0)) { $0 | UInt32($1.element) << (16 - 8 * UInt32($1.offset)) }
            for position in 0...chunk.count {
                out.append(alphabet[Int(value >> (18 - 6 * UInt32(position)) & 0x3F)])
            }
            index += 3
        }
        return String(decoding: out, as: UTF8.self)
    }

    static func decode(_ text: String) -> [UInt8]? {
        var bits: UInt32 = 0
        var count = 0
        var out: [UInt8] = []
        for char in text.utf8 {
            guard let value = alphabet.firstIndex(of: char) else { return nil }
            bits = bits << 6 | UInt32(value)
            count += 6
            if count >= 8 {
                count -= 8
                out.append(UInt8(truncatingIfNeeded: bits >> UInt32(count)))
            }
        }
        return out
    }
}
