/// The limits a MongoDB server reports in `hello`, which every write command must respect:
/// a command document over `maxBsonObjectSize` (plus the server's small allowance for command
/// fields) or a message over `maxMessageSizeBytes` is refused or resets the connection, and a
/// write command holds at most `maxWriteBatchSize` documents or statements.
///
/// MongoDB 7 reports 16 MiB, 48 MB and 100,000; the dev server reports 512 KiB and 1 MiB.
public struct WriteLimits: Sendable, Equatable {
    public var maxBsonObjectSize: Int
    public var maxMessageSizeBytes: Int
    public var maxWriteBatchSize: Int

    /// MongoDB's documented defaults, used until a server has answered `hello`.
    public static let mongoDBDefaults = WriteLimits(maxBsonObjectSize: 16 * 1024 * 1024, maxMessageSizeBytes: 48_000_000, maxWriteBatchSize: 100_000)

    public init(maxBsonObjectSize: Int, maxMessageSizeBytes: Int, maxWriteBatchSize: Int) {
        self.maxBsonObjectSize = maxBsonObjectSize
        self.maxMessageSizeBytes = maxMessageSizeBytes
        self.maxWriteBatchSize = maxWriteBatchSize
    }

    /// Read from a `hello` reply; a missing or unusable field keeps MongoDB's default.
    public init(hello reply: BSONDocument) {
        func positive(_ key: String, _ fallback: Int) -> Int {
            guard let value = reply[key]?.int64, value > 0, value <= Int64(Int32.max) else { return fallback }
            return Int(value)
        }
        let defaults = Self.mongoDBDefaults
        self.init(
            maxBsonObjectSize: positive("maxBsonObjectSize", defaults.maxBsonObjectSize),
            maxMessageSizeBytes: positive("maxMessageSizeBytes", defaults.maxMessageSizeBytes),
            maxWriteBatchSize: positive("maxWriteBatchSize", defaults.maxWriteBatchSize))
    }

    /// Room kept in every command for what the driver adds to it (`$db`, `lsid`, `$clusterTime`,
    /// `txnNumber`, the read and write concerns) and for the message header: a few hundred bytes
    /// in practice, 16 KiB to be sure (the allowance MongoDB itself gives command fields).
    static let commandOverhead = 16 * 1024

    /// The most bytes the items of one write command may take together (their array included).
    /// The command document is kept under `maxBsonObjectSize`, which also keeps the message
    /// under `maxMessageSizeBytes` wherever that is larger, as it is on every server.
    public var itemBytes: Int {
        max(1024, min(maxBsonObjectSize, maxMessageSizeBytes) - Self.commandOverhead)
    }

    /// How many items of at most `itemSize` bytes each fit in one write command.
    public func itemsPerCommand(itemSize: Int) -> Int {
        // Each array element adds a type byte, its key (up to six digits) and a NUL.
        max(1, min(maxWriteBatchSize, (itemBytes - 5) / (itemSize + 8)))
    }

    /// Splits items of the given encoded sizes into consecutive ranges, each one write command:
    /// at most `maxWriteBatchSize` items (and at most `maxCount`, when given) and at most
    /// `itemBytes` bytes of array. An item too large on its own goes alone (the server refuses
    /// just that command, and only that item fails).
    public func split(sizes: [Int], maxCount: Int? = nil) -> [Range<Int>] {
        let countLimit = max(1, min(maxWriteBatchSize, maxCount ?? Int.max))
        let byteLimit = itemBytes
        var ranges: [Range<Int>] = []
        var start = 0
        var bytes = 5  // the array's own length and closing NUL
        for (index, size) in sizes.enumerated() {
            let cost = BSONDocument.arrayElementOverhead(index: index - start) + size
            if index > start && (index - start >= countLimit || bytes + cost > byteLimit) {
                ranges.append(start..<index)
                start = index
                bytes = 5 + BSONDocument.arrayElementOverhead(index: 0) + size
            } else {
                bytes += cost
            }
        }
        if start < sizes.count { ranges.append(start..<sizes.count) }
        return ranges
    }
}
