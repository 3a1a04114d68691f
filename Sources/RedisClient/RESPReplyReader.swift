private import CHiredis
public import NIOCore

/// hiredis's reply parser, with no I/O: bytes go in, whole replies come out.
///
/// `next()` returns nil while a reply is incomplete. A protocol error sticks (hiredis drops
/// its buffer), so the owner must close the connection rather than reuse the reader.
@_spi(Benchmarks) public final class RESPReplyReader {
    private let reader: UnsafeMutablePointer<redisReader>

    public init() {
        guard let reader = redisReaderCreate() else { preconditionFailure("redisReaderCreate: out of memory") }
        self.reader = reader
    }

    deinit {
        redisReaderFree(reader)
    }

    public func feed(_ buffer: ByteBuffer) throws(RedisError) {
        let status = buffer.withUnsafeReadableBytes { bytes -> Int32 in
            guard let base = bytes.baseAddress, bytes.count > 0 else { return REDIS_OK }
            return redisReaderFeed(reader, base.assumingMemoryBound(to: CChar.self), bytes.count)
        }
        if status != REDIS_OK { throw .protocolError(errorText) }
    }

    /// The next complete reply, or nil when more bytes are needed.
    public func next() throws(RedisError) -> RESPValue? {
        var raw: UnsafeMutableRawPointer? = nil
        guard redisReaderGetReply(reader, &raw) == REDIS_OK else { throw .protocolError(errorText) }
        guard let raw else { return nil }
        defer { freeReplyObject(raw) }
        return Self.convert(raw.assumingMemoryBound(to: redisReply.self))
    }

    private var errorText: String {
        withUnsafeBytes(of: reader.pointee.errstr) { bytes in
            String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
        }
    }

    private static func convert(_ reply: UnsafeMutablePointer<redisReply>) -> RESPValue {
        let value = reply.pointee
        func text() -> [UInt8] {
            guard let str = value.str else { return [] }
            return Array(UnsafeRawBufferPointer(start: str, count: Int(value.len)))
        }
        switch value.type {
        case REDIS_REPLY_STRING: return .bulkString(text())
        case REDIS_REPLY_STATUS: return .simpleString(String(decoding: text(), as: UTF8.self))
        case REDIS_REPLY_ERROR: return .error(String(decoding: text(), as: UTF8.self))
        case REDIS_REPLY_INTEGER: return .integer(value.integer)
        case REDIS_REPLY_ARRAY:
            var elements: [RESPValue] = []
            elements.reserveCapacity(Int(value.elements))
            for index in 0..<Int(value.elements) {
                if let element = value.element[index] { elements.append(convert(element)) } else { elements.append(.null) }
            }
            return .array(elements)
        default: return .null
        }
    }
}
