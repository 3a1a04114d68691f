private import CMongoc

/// Owns one C `bson_t` (libbson declares it 128-byte aligned, so Swift can only hold a pointer).
///
/// The only place BSON crosses the C boundary: Swift `BSONDocument`s are appended field by
/// field with `bson_append_*`, and replies are read back with a `bson_iter_t` in aligned heap memory.
@_spi(Benchmarks) public final class OwnedBSON {
    /// Reach it through `withPointer`, which keeps this owner alive for the whole C call (the
    /// optimizer may otherwise release it after the last read of the pointer, before the call).
    private let pointer: OpaquePointer

    public init(_ document: BSONDocument) {
        pointer = bson_new()
        Self.append(document, to: pointer)
    }

    /// Takes a copy of a `bson_t` that libmongoc owns (cursor documents are only valid until the next call).
    init(copying source: OpaquePointer) {
        pointer = bson_copy(source)
    }

    /// Adopts a `bson_t` allocated with `bson_new` (e.g. one a reply out-parameter was initialised into).
    init(adopting pointer: OpaquePointer) {
        self.pointer = pointer
    }

    deinit {
        bson_destroy(pointer)
    }

    func withPointer<T, E: Error>(_ body: (OpaquePointer) throws(E) -> T) throws(E) -> T {
        defer { withExtendedLifetime(self) {} }
        return try body(pointer)
    }

    public var document: BSONDocument { Self.read(pointer) }

    /// The encoded length, as libbson wrote it (the document's first four bytes, little-endian).
    var byteCount: Int {
        withPointer { pointer in
            let data = bson_get_data(pointer)!
            return Int(data[0]) | Int(data[1]) << 8 | Int(data[2]) << 16 | Int(data[3]) << 24
        }
    }

    // MARK: Swift → C

    private static func append(_ document: BSONDocument, to target: OpaquePointer) {
        for (key, value) in document.fields {
            append(value, key: key, to: target)
        }
    }

    private static func append(_ value: BSONValue, key: String, to target: OpaquePointer) {
        let keyLength = Int32(key.utf8.count)
        switch value {
        case .double(let number): bson_append_double(target, key, keyLength, number)
        case .string(let text):
            // The explicit length keeps any embedded NUL; withCString guarantees a valid pointer even for "".
            text.withCString { chars in _ = bson_append_utf8(target, key, keyLength, chars, Int32(text.utf8.count)) }
        case .document(let child):
            OwnedBSON(child).withPointer { nested in _ = bson_append_document(target, key, keyLength, nested) }
        case .array(let elements):
            let array = BSONDocument(elements.enumerated().map { (key: String($0.offset), value: $0.element) })
            OwnedBSON(array).withPointer { nested in _ = bson_append_array(target, key, keyLength, nested) }
        case .objectID(let id):
            var oid = bson_oid_t()
            withUnsafeMutableBytes(of: &oid.bytes) { raw in raw.copyBytes(from: id.bytes) }
            bson_append_oid(target, key, keyLength, &oid)
        case .bool(let flag): bson_append_bool(target, key, keyLength, flag)
        case .datetime(let milliseconds): bson_append_date_time(target, key, keyLength, milliseconds)
        case .null, .unsupported: bson_append_null(target, key, keyLength)
        case .int32(let number): bson_append_int32(target, key, keyLength, number)
        case .int64(let number): bson_append_int64(target, key, keyLength, number)
        }
    }

    // MARK: C → Swift

    private static func read(_ source: OpaquePointer) -> BSONDocument {
        withIterator { iterator in
            guard bson_iter_init(iterator, source) else { return BSONDocument() }
            return readFields(iterator)
        }
    }

    private static func withIterator<T>(_ body: (OpaquePointer) -> T) -> T {
        // bson_iter_t is 128-byte aligned and about 130 bytes long.
        let memory = UnsafeMutableRawPointer.allocate(byteCount: 256, alignment: 128)
        defer { memory.deallocate() }
        return body(OpaquePointer(memory))
    }

    private static func readFields(_ iterator: OpaquePointer) -> BSONDocument {
        var fields: [(key: String, value: BSONValue)] = []
        while bson_iter_next(iterator) {
            let key = String(cString: bson_iter_key(iterator))
            fields.append((key: key, value: readValue(iterator)))
        }
        return BSONDocument(fields)
    }

    private static func readValue(_ iterator: OpaquePointer) -> BSONValue {
        let type = bson_iter_type(iterator)
        switch type {
        case BSON_TYPE_DOUBLE: return .double(bson_iter_double(iterator))
        case BSON_TYPE_UTF8:
            var length: UInt32 = 0
            guard let chars = bson_iter_utf8(iterator, &length) else { return .string("") }
            return .string(String(decoding: UnsafeRawBufferPointer(start: chars, count: Int(length)), as: UTF8.self))
        case BSON_TYPE_DOCUMENT, BSON_TYPE_ARRAY:
            let child = withIterator { childIterator -> BSONDocument in
                guard bson_iter_recurse(iterator, childIterator) else { return BSONDocument() }
                return readFields(childIterator)
            }
            return type == BSON_TYPE_ARRAY ? .array(child.fields.map(\.value)) : .document(child)
        case BSON_TYPE_OID:
            guard let oid = bson_iter_oid(iterator) else { return .null }
            let bytes = withUnsafeBytes(of: oid.pointee.bytes) { Array($0) }
            return ObjectID(bytes: bytes).map(BSONValue.objectID) ?? .null
        case BSON_TYPE_BOOL: return .bool(bson_iter_bool(iterator))
        case BSON_TYPE_DATE_TIME: return .datetime(bson_iter_date_time(iterator))
        case BSON_TYPE_NULL, BSON_TYPE_UNDEFINED: return .null
        case BSON_TYPE_INT32: return .int32(bson_iter_int32(iterator))
        case BSON_TYPE_INT64: return .int64(bson_iter_int64(iterator))
        default: return .unsupported(UInt8(truncatingIfNeeded: type.rawValue))
        }
    }
}
