/// Redis Cluster's key-to-slot function: CRC16 (XMODEM) of the key, or of its hash tag, mod 16384.
///
/// A hash tag is the text between the first `{` and the first `}` after it, when that text is
/// not empty: keys that share one are in one slot, so a script may touch all of them.
public enum HashSlot {
    public static let count = 16384

    /// Computed on the string's UTF-8 view, without copying it (every cluster call does this).
    public static func of(_ key: String) -> Int {
        of(bytes: key.utf8)
    }

    public static func of<Bytes: Collection<UInt8>>(bytes key: Bytes) -> Int {
        Int(crc16(tagged(key)) & UInt16(count - 1))
    }

    /// The bytes that are hashed: the tag's, or the whole key's.
    static func tagged<Bytes: Collection<UInt8>>(_ key: Bytes) -> Bytes.SubSequence {
        guard let open = key.firstIndex(of: UInt8(ascii: "{")) else { return key[...] }
        let afterOpen = key.index(after: open)
        guard let close = key[afterOpen...].firstIndex(of: UInt8(ascii: "}")), close != afterOpen else { return key[...] }
        return key[afterOpen..<close]
    }

    static func crc16(_ bytes: some Sequence<UInt8>) -> UInt16 {
        var crc: UInt16 = 0
        for byte in bytes {
            crc = (crc << 8) ^ table[Int(UInt8(truncatingIfNeeded: crc >> 8) ^ byte)]
        }
        return crc
    }

    private static let table: [UInt16] = (0..<256).map { index in
        var crc = UInt16(index) << 8
        for _ in 0..<8 { crc = crc & 0x8000 != 0 ? (crc << 1) ^ 0x1021 : crc << 1 }
        return crc
    }
}
