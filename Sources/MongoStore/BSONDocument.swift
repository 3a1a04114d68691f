/// An ordered BSON document (field order matters to MongoDB: command names first, sort keys in order).
public struct BSONDocument: Sendable, Equatable, ExpressibleByDictionaryLiteral {
    public private(set) var fields: [(key: String, value: BSONValue)]

    public init() {
        fields = []
    }

    public init(_ fields: [(key: String, value: BSONValue)]) {
        self.fields = fields
    }

    public init(dictionaryLiteral elements: (String, BSONValue)...) {
        fields = elements.map { (key: $0.0, value: $0.1) }
    }

    /// The first field with `key`; setting nil removes it, setting a value replaces it in place or appends it.
    public subscript(key: String) -> BSONValue? {
        get { fields.first { $0.key == key }?.value }
        set {
            if let index = fields.firstIndex(where: { $0.key == key }) {
                if let newValue { fields[index].value = newValue } else { fields.remove(at: index) }
            } else if let newValue {
                fields.append((key: key, value: newValue))
            }
        }
    }

    public static func == (lhs: BSONDocument, rhs: BSONDocument) -> Bool {
        lhs.fields.count == rhs.fields.count && zip(lhs.fields, rhs.fields).allSatisfy { $0.key == $1.key && $0.value == $1.value }
    }
}
