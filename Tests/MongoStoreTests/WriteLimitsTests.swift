@_spi(Benchmarks) @testable import MongoStore
import NIOPosix
import Testing
import TestSupport

/// Writes split by the limits a server reports in `hello` (issue 17, item 2).
@Suite("Write limits: sizes and splitting")
struct WriteLimitsTests {
    static let devServer = WriteLimits(maxBsonObjectSize: 512 * 1024, maxMessageSizeBytes: 1024 * 1024, maxWriteBatchSize: 100_000)

    @Test func encodedSizeIsWhatLibbsonWrites() {
        let documents: [BSONDocument] = [
            [:],
            ["a": .double(1.5), "s": "héllo", "n": .null, "b": true, "i": .int32(7), "l": .int64(8), "t": .datetime(1)],
            ["_id": .objectID(ObjectID.generate(milliseconds: 1)), "nested": .document(["x": .array([1, "two", .null])])],
            ["array": .array((0..<1234).map { BSONValue.int64(Int64($0)) })],
            ["data": .string(String(repeating: "x", count: 16 * 1024))],
        ]
        for document in documents {
            #expect(document.encodedSize == OwnedBSON(document).byteCount)
        }
    }

    @Test func readsTheLimitsFromHelloAndKeepsDefaultsForWhatIsMissing() {
        #expect(WriteLimits(hello: ["maxBsonObjectSize": .int32(524_288), "maxMessageSizeBytes": .int64(1_048_576), "maxWriteBatchSize": .int32(100_000)])
            == Self.devServer)
        #expect(WriteLimits(hello: ["ok": .double(1)]) == .mongoDBDefaults)
        #expect(WriteLimits(hello: ["maxBsonObjectSize": .int32(-1)]) == .mongoDBDefaults)
    }

    @Test func splitsByCountAndByBytesAndKeepsOrder() {
        var limits = Self.devServer
        limits.maxWriteBatchSize = 3
        #expect(limits.split(sizes: Array(repeating: 10, count: 7)) == [0..<3, 3..<6, 6..<7])
        #expect(Self.devServer.split(sizes: Array(repeating: 10, count: 7), maxCount: 2) == [0..<2, 2..<4, 4..<6, 6..<7])
        #expect(Self.devServer.split(sizes: []) == [])
        // 17 KiB documents: 29 of them fit in 496 KiB (with their array keys), the 30th does not.
        let sizes = Array(repeating: 17 * 1024, count: 100)
        let ranges = Self.devServer.split(sizes: sizes)
        #expect(ranges.map(\.count) == [29, 29, 29, 13])
        #expect(ranges.flatMap { Array($0) } == Array(0..<100))
        for range in ranges {
            let array = BSONDocument.arraySize(Array(repeating: BSONValue.string(String(repeating: "x", count: 17 * 1024 - 5)), count: range.count))
            #expect(array <= Self.devServer.itemBytes)
        }
        #expect(Self.devServer.itemsPerCommand(itemSize: 17 * 1024) == 29)
        // Real MongoDB: a thousand 17 KiB documents are two commands, not one of 17 MB.
        #expect(WriteLimits.mongoDBDefaults.split(sizes: Array(repeating: 17 * 1024, count: 1000)).count == 2)
    }

    @Test func anItemLargerThanACommandGoesAlone() {
        #expect(Self.devServer.split(sizes: [100, 600 * 1024, 100]) == [0..<1, 1..<2, 2..<3])
    }

    /// On the dev server: 150 documents of 10 KiB (1.5 MB, over its 1 MiB messages) in one call
    /// are all stored. One command of that size resets the dev server's connection.
    @Test func aLargeInsertAndALargeUpdateAreSplitOnTheDevServer() async throws {
        try await MongoStoreTests.withPool(timeoutMilliseconds: 30_000) { pool, _ async throws in
            let limits = try await pool.writeLimits()
            #expect(limits.maxBsonObjectSize == 512 * 1024 && limits.maxMessageSizeBytes == 1024 * 1024, "\(limits)")
            let items = pool.collection("large")
            let documents: [BSONDocument] = (0..<150).map { index in
                ["_id": .int64(Int64(index)), "blob": .string(String(repeating: "y", count: 10 * 1024))]
            }
            #expect(try await items.insertEach(documents).isEmpty)
            let again = try await items.insert(documents)
            #expect(again.inserted == 0 && again.duplicateIndexes == Array(0..<150), "positions across commands")
            let statements = (0..<150).map { index in
                MongoCollection.UpdateStatement(filter: ["_id": .int64(Int64(index))], update: ["$set": ["note": .string(String(repeating: "z", count: 4 * 1024))]])
            }
            let updated = try await items.update(statements)
            #expect(updated.matched == 150 && updated.modified == 150)
            #expect(try await items.find([:], projection: ["_id": 1]).count == 150)
        }
    }
}

extension WriteLimitsTests {
    /// An ordered insert split into several commands stops at its first error, as one command would.
    @Test func anOrderedInsertStopsAtItsFirstErrorAcrossChunks() async throws {
        try await MongoStoreTests.withPool(timeoutMilliseconds: 30_000) { pool, _ async throws in
            let items = pool.collection("ordered")
            let blob = String(repeating: "o", count: 10 * 1024)
            // The 10th document repeats the first id; 150 documents of 10 KiB take several commands.
            let documents: [BSONDocument] = (0..<150).map { index in ["_id": .int64(Int64(index == 9 ? 0 : index)), "blob": .string(blob)] }
            let result = try await items.insert(documents, ordered: true)
            #expect(result.duplicateIndexes == [9])
            #expect(result.inserted == 9)
            #expect(try await items.find([:], projection: ["_id": 1]).count == 9, "nothing after the error")
        }
    }
}
