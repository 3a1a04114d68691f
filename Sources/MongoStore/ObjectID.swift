internal import Synchronization

/// A 12-byte MongoDB ObjectId.
///
/// Generated ids put the creation time in milliseconds in their first six bytes (seconds,
/// then milliseconds), then a per-process random value and a counter. They stay valid
/// ObjectIds (the first four bytes are the Unix seconds), and sorting by `_id` sorts by
/// creation time to the millisecond across instances, which is what the feed's cursor needs.
public struct ObjectID: Sendable, Hashable, Comparable, CustomStringConvertible {
    public let bytes: [UInt8]

    public init?(bytes: [UInt8]) {
        guard bytes.count == 12 else { return nil }
        self.bytes = bytes
    }

    /// Parses 24 hex digits (either case).
    public init?(hex: some StringProtocol) {
        let utf8 = Array(hex.utf8)
        guard utf8.count == 24 else { return nil }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(12)
        for index in stride(from: 0, to: 24, by: 2) {
            guard let high = Self.nibble(utf8[index]), let low = Self.nibble(utf8[index + 1]) else { return nil }
            bytes.append(high << 4 | low)
        }
        self.bytes = bytes
    }

    /// A new id for a document created at `milliseconds` since the epoch.
    public static func generate(milliseconds: Int64) -> ObjectID {
        let count = counter.wrappingAdd(1, ordering: .relaxed).oldValue
        return make(milliseconds: milliseconds, tail: processTag + [UInt8(truncatingIfNeeded: count >> 16), UInt8(truncatingIfNeeded: count >> 8), UInt8(truncatingIfNeeded: count)])
    }

    /// Milliseconds since the epoch encoded in the first six bytes (for ids this type generated).
    public var milliseconds: Int64 {
        let seconds = bytes[0..<4].reduce(Int64(0)) { $0 << 8 | Int64($1) }
        let millis = Int64(bytes[4]) << 8 | Int64(bytes[5])
        return seconds * 1000 + (millis < 1000 ? millis : 0)
    }

    public var description: String {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(24)
        for byte in bytes {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0xf)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    public static func < (lhs: ObjectID, rhs: ObjectID) -> Bool {
        lhs.bytes.lexicographicallyPrecedes(rhs.bytes)
    }

    /// An id with the time in milliseconds in its first six bytes and a caller's six-byte tail.
    public static func make(milliseconds: Int64, tail: [UInt8]) -> ObjectID {
        let seconds = UInt32(truncatingIfNeeded: milliseconds / 1000)
        let millis = UInt16(milliseconds % 1000)
        let head: [UInt8] = [
            UInt8(seconds >> 24), UInt8(truncatingIfNeeded: seconds >> 16), UInt8(truncatingIfNeeded: seconds >> 8),
            UInt8(truncatingIfNeeded: seconds), UInt8(millis >> 8), UInt8(truncatingIfNeeded: millis),
        ]
        return ObjectID(bytes: head + tail)!
    }

    private static let processTag: [UInt8] = (0..<3).map { _ in UInt8.random(in: 0...255) }
    private static let counter = Atomic<UInt32>(UInt32.random(in: 0...0xFFFFFF))

    private static func nibble(_ char: UInt8) -> UInt8? {
        switch char {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): char - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): char - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): char - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}
