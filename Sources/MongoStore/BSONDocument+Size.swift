extension BSONDocument {
    /// The document's size encoded as BSON, in bytes, computed without encoding it (what the
    /// server's `maxBsonObjectSize` and `maxMessageSizeBytes` are compared with).
    public var encodedSize: Int {
        // int32 length, the elements, the closing NUL.
        fields.reduce(5) { $0 + Self.elementSize(key: $1.key, value: $1.value) }
    }

    /// Type byte, the key as a C string, the value.
    static func elementSize(key: String, value: BSONValue) -> Int {
        1 + key.utf8.count + 1 + value.encodedSize
    }
}

extension BSONValue {
    /// The value's size encoded as BSON, without its type byte and key.
    var encodedSize: Int {
        switch self {
        case .double, .datetime, .int64: 8
        case .int32: 4
        case .bool: 1
        case .null, .unsupported: 0
        case .objectID: 12
        // int32 length, the bytes, the closing NUL.
        case .string(let text): 4 + text.utf8.count + 1
        case .document(let document): document.encodedSize
        case .array(let elements): BSONDocument.arraySize(elements)
        }
    }
}

extension BSONDocument {
    /// An array is a document keyed "0", "1", ...
    static func arraySize(_ elements: [BSONValue]) -> Int {
        var size = 5
        for (index, element) in elements.enumerated() {
            size += arrayElementOverhead(index: index) + element.encodedSize
        }
        return size
    }

    /// What the element at `index` of an array adds besides its value: type byte, key, NUL.
    static func arrayElementOverhead(index: Int) -> Int {
        2 + decimalDigits(index)
    }

    private static func decimalDigits(_ value: Int) -> Int {
        var digits = 1
        var rest = value
        while rest >= 10 {
            rest /= 10
            digits += 1
        }
        return digits
    }
}
