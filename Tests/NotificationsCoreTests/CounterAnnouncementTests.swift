import Logging
import Metrics
import MongoStore
@testable import NotificationsCore
import Synchronization
import Testing
import TestSupport

/// What a write owes its counters is stored before the write (issue 17, item 11): a writer that
/// dies after its write leaves an announcement that another instance's sweep resolves, against
/// a real MongoDB-wire server. The dead writer is played by the test: its announcement and its
/// write are made by hand and never settled, as SIGKILL between the write and its settle leaves
/// them (the end-to-end SIGKILL test is `CounterUnknownOutcomeTests`). Before this, what was owed
/// lived in the writer's memory only: nothing in MongoDB told another instance, and the counter
/// stayed wrong for good (and a create answered 503 stayed stored).
@Suite("Counter announcements: repairs owed by a dead writer are made by another instance")
struct CounterAnnouncementTests {
    /// `counterSettle` of one second (no deadline, the clock skew), so announcements age quickly.
    static func counters(_ pool: MongoClientPool, repaired: @escaping @Sendable ([String]) async -> Void = { _ in }) -> UserCounters {
        UserCounters(
            notifications: pool.collection("notifications"), counters: pool.collection("user_counters"), timing: WriteTiming(writeDeadline: .zero),
            metrics: ServiceMetrics(factory: NOOPMetricsHandler.instance), logger: Logger(label: "test"), repaired: repaired)
    }

    static func unread(_ user: String, run: String? = nil) -> BSONDocument {
        var document: BSONDocument = ["_id": .objectID(ObjectID.generate(milliseconds: SystemWallClock().now().milliseconds)), "recipientId": .string(user), "readAt": .null]
        if let run { document["run"] = .string(run) }
        return document
    }

    static func counter(_ pool: MongoClientPool, _ user: String) async throws -> BSONDocument? {
        try await pool.collection("user_counters").findOne(["_id": .string(user)])
    }

    /// Sweeps until the user's counter holds no announcement (two steps, a confirmation gap apart).
    static func sweepUntilResolved(_ sweeper: UserCounters, _ pool: MongoClientPool, _ user: String) async throws -> BSONDocument? {
        try await retrying(for: .seconds(15), every: .milliseconds(250)) {
            _ = try await sweeper.sweep()
            return try await counter(pool, user)
        } until: { counter in
            let announcements = counter?["pending"]?.document?.fields.count ?? 0
            return announcements == 0 && counter?["inflight"]?.int64 == 0
        }
    }

    @Test func aCreateWhoseWriterDiedAfterItsInsertIsDeletedAndRecountedByAnotherInstance() async throws {
        try await withMongoPool { pool in
            let notifications = pool.collection("notifications")
            let writer = Self.counters(pool)
            // A create that was settled: it stays.
            try await writer.announce(["u"], token: "kept", inserts: true)
            try await notifications.insertOne(Self.unread("u", run: "kept"))
            #expect(try await writer.settle(["u": .created(1)], token: "kept"))
            // The dead writer: announced, inserted, never settled (its client got no 201).
            try await writer.announce(["u"], token: "dead", inserts: true)
            try await notifications.insertOne(Self.unread("u", run: "dead"))
            let other = Self.counters(pool)
            #expect(try await other.sweep() == 0, "a writer may still settle within counterSettle")
            #expect(try await other.counts("u").unread == 1, "the counter is trusted meanwhile")
            try await Task.sleep(for: other.settle + .milliseconds(100))
            let resolved = try await Self.sweepUntilResolved(other, pool, "u")
            #expect(resolved?["stale"]?.bool == true, "recounted until reconciled")
            #expect(try await notifications.find(["recipientId": "u"]).compactMap { $0["run"]?.string } == ["kept"], "the unsettled create is gone")
            // Reads recount, then reconcile.
            let reconciled = try await retrying(for: .seconds(10), every: .milliseconds(300)) {
                #expect(try await other.counts("u").unread == 1)
                return try await Self.counter(pool, "u")
            } until: { $0?["stale"]?.bool == false }
            #expect(reconciled?["unread"]?.int64 == 1)
        }
    }

    @Test func aReadWhoseWriterDiedBeforeSettlingIsRecountedByAnotherInstance() async throws {
        try await withMongoPool { pool in
            let notifications = pool.collection("notifications")
            let writer = Self.counters(pool)
            let first = Self.unread("r")
            try await writer.announce(["r"], token: "two", inserts: true)
            _ = try await notifications.insert([first, Self.unread("r")])
            #expect(try await writer.settle(["r": .created(2)], token: "two"))
            // The dead writer marked one read and never settled: the counter still says 2.
            try await writer.announce(["r"], token: "read", inserts: false)
            _ = try await notifications.update(["_id": first["_id"] ?? .null], ["$set": ["readAt": .datetime(1)]])
            let other = Self.counters(pool)
            try await Task.sleep(for: other.settle + .milliseconds(100))
            #expect(try await other.counts("r").unread == 1, "an announcement older than counterSettle is not trusted, even before a sweep")
            _ = try await Self.sweepUntilResolved(other, pool, "r")
            #expect(try await notifications.find(["recipientId": "r"]).count == 2, "a write that inserts nothing deletes nothing")
            let reconciled = try await retrying(for: .seconds(10), every: .milliseconds(300)) {
                #expect(try await other.counts("r").unread == 1)
                return try await Self.counter(pool, "r")
            } until: { $0?["stale"]?.bool == false }
            #expect(reconciled?["unread"]?.int64 == 1)
        }
    }

    /// A writer frozen past `counterSettle` wakes after the sweep resolved its announcement: its
    /// settle changes nothing and says so (the creates it belongs to are answered 503 and undone).
    @Test func aSettleAfterTheSweepResolvedItsAnnouncementChangesNothing() async throws {
        try await withMongoPool { pool in
            let writer = Self.counters(pool)
            try await writer.announce(["f", "g"], token: "frozen", inserts: false)
            try await Task.sleep(for: writer.settle + .milliseconds(100))
            let repaired = Mutex<Set<String>>([])
            let other = Self.counters(pool) { users in repaired.withLock { $0.formUnion(users) } }
            _ = try await Self.sweepUntilResolved(other, pool, "f")
            #expect(repaired.withLock { $0 } == ["f", "g"], "cached counts are dropped")
            #expect(try await writer.settle(["f": .created(1), "g": .created(1)], token: "frozen") == false)
            for user in ["f", "g"] {
                let counter = try await Self.counter(pool, user)
                #expect(counter?["unread"]?.int64 == 0 && counter?["inflight"]?.int64 == 0, "\(String(describing: counter))")
            }
        }
    }

    /// Announcing for many users, some with counters and some without, is a constant number of
    /// commands and leaves each counter exactly one announcement.
    @Test func anAnnouncementReachesEveryCounterOnce() async throws {
        try await withMongoPool { pool in
            let writer = Self.counters(pool)
            let known = (0..<30).map { "k-\($0)" }
            try await writer.announce(known, token: "first", inserts: false)
            #expect(try await writer.settle(Dictionary(uniqueKeysWithValues: known.map { ($0, Counts.created(1)) }), token: "first"))
            let users = known + (0..<30).map { "n-\($0)" }
            try await writer.announce(users + users, token: "mixed", inserts: true)
            let counters = try await pool.collection("user_counters").find(["_id": ["$in": .array(users.map(BSONValue.string))]])
            #expect(counters.count == users.count)
            #expect(counters.allSatisfy { $0["inflight"]?.int64 == 1 && $0["pending"]?.document?["mixed"] != nil })
            #expect(try await writer.settle(Dictionary(uniqueKeysWithValues: users.map { ($0, Counts.created(2)) }), token: "mixed"))
            let settled = try await pool.collection("user_counters").find(["_id": ["$in": .array(users.map(BSONValue.string))]])
            #expect(settled.allSatisfy { $0["inflight"]?.int64 == 0 && ($0["pending"]?.document?.fields.count ?? 0) == 0 })
            let total = settled.map { $0["unread"]?.int64 ?? -1 }.reduce(0, +)
            #expect(total == 30 * 3 + 30 * 2)
        }
    }
}
