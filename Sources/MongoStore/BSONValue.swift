/// A BSON value as plain Swift data; the C `bson_t` appears only while talking to libmongoc.
public enum BSONValue: Sendable, Equatable {
    case double(Double)
    case string(String)
    case document(BSONDocument)
    case array([BSONValue])
    case objectID(ObjectID)
    case bool(Bool)
    /// Milliseconds since the Unix epoch (a BSON datetime).
    case datetime(Int64)
    case null
    case int32(Int32)
    case int64(Int64)
    /// A type this service never writes (binary, regex, decimal128...), kept by its BSON type number.
    case unsupported(UInt8)

    public var string: String? {
        if case .string(let value) = self { return value }
        return nil
    }

    /// Any numeric type as Int64: some MongoDB-wire servers answer counts as int64, others as int32 or double.
    public var int64: Int64? {
        switch self {
        case .int32(let value): Int64(value)
        case .int64(let value): value
        case .double(let value) where value.rounded() == value && abs(value) < 9.0e18: Int64(value)
        default: nil
        }
    }

    public var bool: Bool? {
        if case .bool(let value) = self { return value }
        return nil
    }

    public var document: BSONDocument? {
        if case .document(let value) = self { return value }
        return nil
    }

    public var array: [BSONValue]? {
        if case .array(let value) = self { return value }
        return nil
    }

    public var objectID: ObjectID? {
        if case .objectID(let value) = self { return value }
        return nil
    }

    public var datetime: Int64? {
        if case .datetime(let value) = self { return value }
        return nil
    }

    public var isNull: Bool {
        if case .null = self { return true }
        return false
    }
}

extension BSONValue: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByBooleanLiteral {
    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int64) { self = .int64(value) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
}

extension BSONValue: ExpressibleByArrayLiteral, ExpressibleByDictionaryLiteral {
    public init(arrayLiteral elements: BSONValue...) { self = .array(elements) }
    public init(dictionaryLiteral elements: (String, BSONValue)...) {
        self = .document(BSONDocument(elements.map { (key: $0.0, value: $0.1) }))
    }
}
