import MongoStore
import NIOPosix
import Testing
import TestSupport

@Suite("MongoStore against the MongoDB-wire server", .serialized)
struct MongoStoreTests {
    static func withPool(timeoutMilliseconds: Int64 = 3000, _ body: @Sendable (MongoClientPool, ChildServer) async throws -> Void) async throws {
        try await TestServers.fixtures.withPermit { try await runPool(timeoutMilliseconds: timeoutMilliseconds, body) }
    }

    static func runPool(timeoutMilliseconds: Int64, _ body: @Sendable (MongoClientPool, ChildServer) async throws -> Void) async throws {
        let server = try await TestServers.startMongo()
        defer { server.stop() }
        let pool = try MongoClientPool(
            uriString: "mongodb://127.0.0.1:\(server.port)/test?maxPoolSize=3", operationTimeoutMilliseconds: timeoutMilliseconds,
            eventLoopGroup: MultiThreadedEventLoopGroup.singleton)
        try await body(pool, server)
        await pool.shutdown()
    }

    @Test func insertFindUpdateDeleteRoundTrip() async throws {
        try await Self.withPool { pool, _ async throws in
            let items = pool.collection("items")
            try await items.createIndexes([.init(name: "owner_id", keys: ["owner": 1, "_id": -1])])
            let ids = (0..<5).map { ObjectID.generate(milliseconds: 1_700_000_000_000 + Int64($0)) }
            let documents: [BSONDocument] = ids.enumerated().map { index, id in
                ["_id": .objectID(id), "owner": "a", "n": .int32(Int32(index)), "nested": .document(["x": .array([1, "two", .null])]),
                 "at": .datetime(1_700_000_000_123), "flag": true]
            }
            let inserted = try await items.insert(documents)
            #expect(inserted.inserted == 5)
            let found = try await items.find(["owner": "a"], sort: ["owner": 1, "_id": -1], limit: 3)
            #expect(found.map { $0["_id"]?.objectID } == ids.reversed().prefix(3).map { $0 })
            #expect(found.first?["nested"] == .document(["x": .array([.int64(1), "two", .null])]))
            #expect(found.first?["at"] == .datetime(1_700_000_000_123))
            let updated = try await items.update(["owner": "a"], ["$set": ["flag": false]], multi: true)
            #expect(updated.matched == 5)
            #expect(updated.modified == 5)
            let deleted = try await items.delete(["_id": .objectID(ids[0])], limit: 1)
            #expect(deleted == 1)
            #expect(try await items.find(["owner": "a"], sort: ["owner": 1, "_id": -1]).count == 4)
        }
    }

    @Test func duplicateKeyIsTyped() async throws {
        try await Self.withPool { pool, _ async throws in
            let keys = pool.collection("keys")
            try await keys.createIndexes([.init(name: "key_unique", keys: ["key": 1], unique: true)])
            try await keys.insertOne(["key": "k1"])
            await #expect(throws: MongoError.self) { try await keys.insertOne(["key": "k1"]) }
            let batch = try await keys.insert([["key": "k2"], ["key": "k1"], ["key": "k3"]])
            #expect(batch.inserted == 2)
            #expect(batch.duplicateIndexes == [1])
        }
    }

    @Test func upsertIncrementAndFindAndModify() async throws {
        try await Self.withPool { pool, _ async throws in
            let counters = pool.collection("counters")
            _ = try await counters.update(["_id": "u1"], ["$inc": ["n": 2]], upsert: true)
            _ = try await counters.update(["_id": "u1"], ["$inc": ["n": 3]], upsert: true)
            #expect(try await counters.findOne(["_id": "u1"])?["n"]?.int64 == 5)
            let after = try await counters.findAndModify(["_id": "u1"], update: ["$inc": ["n": -1]], returnNew: true)
            #expect(after?["n"]?.int64 == 4)
            let removed = try await counters.findAndModify(["_id": "u1"], remove: true)
            #expect(removed?["n"]?.int64 == 4)
            #expect(try await counters.findOne(["_id": "u1"]) == nil)
        }
    }

    @Test func stoppedServerFailsWithinDeadline() async throws {
        try await Self.withPool(timeoutMilliseconds: 1000) { pool, server async throws in
            #expect(await pool.ping())
            server.pause()
            let clock = ContinuousClock()
            let start = clock.now
            await #expect(throws: MongoError.self) { _ = try await pool.collection("x").find([:]) }
            #expect(clock.now - start < .milliseconds(2500), "bounded by the 1 s deadline, not the driver's 30 s defaults")
            server.resume()
            server.kill()
            let start2 = clock.now
            #expect(await pool.ping() == false)
            #expect(clock.now - start2 < .milliseconds(2500))
        }
    }
}
