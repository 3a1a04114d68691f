/// Writes compact JSON by hand: responses are built field by field (ordered, no reflection),
/// and stored `data` objects are embedded as the JSON text they were saved as.
public struct JSONWriter: Sendable {
    public private(set) var bytes: [UInt8] = []

    public init(capacity: Int = 256) {
        bytes.reserveCapacity(capacity)
    }

    public var string: String { String(decoding: bytes, as: UTF8.self) }

    public mutating func raw(_ text: String) {
        bytes.append(contentsOf: text.utf8)
    }

    public mutating func string(_ text: String) {
        bytes.append(UInt8(ascii: "\""))
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "\""): bytes += [UInt8(ascii: "\\"), UInt8(ascii: "\"")]
            case UInt8(ascii: "\\"): bytes += [UInt8(ascii: "\\"), UInt8(ascii: "\\")]
            case 0x0A: bytes += [UInt8(ascii: "\\"), UInt8(ascii: "n")]
            case 0x0D: bytes += [UInt8(ascii: "\\"), UInt8(ascii: "r")]
            case 0x09: bytes += [UInt8(ascii: "\\"), UInt8(ascii: "t")]
            case 0..<0x20:
                let hex = Array("0123456789abcdef".utf8)
                bytes += [UInt8(ascii: "\\"), UInt8(ascii: "u"), UInt8(ascii: "0"), UInt8(ascii: "0"), hex[Int(byte >> 4)], hex[Int(byte & 0xF)]]
            default: bytes.append(byte)
            }
        }
        bytes.append(UInt8(ascii: "\""))
    }

    public mutating func optionalString(_ text: String?) {
        if let text { string(text) } else { raw("null") }
    }

    public mutating func value(_ value: JSONValue) {
        switch value {
        case .null: raw("null")
        case .bool(let flag): raw(flag ? "true" : "false")
        case .integer(let number): raw(String(number))
        case .number(let number): raw(number.isFinite ? "\(number)" : "null")
        case .string(let text): string(text)
        case .array(let elements):
            raw("[")
            for (index, element) in elements.enumerated() {
                if index > 0 { raw(",") }
                self.value(element)
            }
            raw("]")
        case .object(let members):
            raw("{")
            // Sorted keys: the same object always serialises to the same text.
            for (index, key) in members.keys.sorted().enumerated() {
                if index > 0 { raw(",") }
                string(key)
                raw(":")
                self.value(members[key]!)
            }
            raw("}")
        }
    }

    /// Writes `{"k":v,...}` with the members written by `body` through `ObjectWriter`.
    public mutating func object(_ body: (inout ObjectWriter) -> Void) {
        var members = ObjectWriter(writer: self)
        members.writer.raw("{")
        body(&members)
        members.writer.raw("}")
        self = members.writer
    }

    public struct ObjectWriter {
        fileprivate var writer: JSONWriter
        private var first = true

        fileprivate init(writer: JSONWriter) {
            self.writer = writer
        }

        private mutating func key(_ name: String) {
            if !first { writer.raw(",") }
            first = false
            writer.string(name)
            writer.raw(":")
        }

        public mutating func string(_ name: String, _ value: String?) {
            key(name)
            writer.optionalString(value)
        }

        public mutating func integer(_ name: String, _ value: Int) {
            key(name)
            writer.raw(String(value))
        }

        public mutating func bool(_ name: String, _ value: Bool) {
            key(name)
            writer.raw(value ? "true" : "false")
        }

        public mutating func value(_ name: String, _ value: JSONValue) {
            key(name)
            writer.value(value)
        }

        /// A member whose value is already JSON text (trusted: produced by this writer).
        public mutating func rawJSON(_ name: String, _ json: String) {
            key(name)
            writer.raw(json)
        }

        public mutating func array<T>(_ name: String, _ elements: [T], _ write: (inout JSONWriter, T) -> Void) {
            key(name)
            writer.raw("[")
            for (index, element) in elements.enumerated() {
                if index > 0 { writer.raw(",") }
                write(&writer, element)
            }
            writer.raw("]")
        }

        public mutating func object(_ name: String, _ body: (inout ObjectWriter) -> Void) {
            key(name)
            writer.object(body)
        }
    }
}
