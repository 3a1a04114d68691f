import Logging
import Metrics
import MongoStore
import NIOPosix
@testable import NotificationsCore
import Testing
import TestSupport

@Suite("Unread counters: reconciling a stale counter against a racing $inc")
struct UserCountersTests {
    /// A write commits before the recount counts it, but its `$inc` lands after the recount read
    /// the counter: a one-step reconcile (set the count, clear stale) would end one too high.
    @Test func aRecountRacingAnIncNeitherLosesNorDoublesIt() async throws {
        try await withMongoPool { pool in
            let notifications = pool.collection("notifications")
            let counterDocuments = pool.collection("user_counters")
            let counters = UserCounters(
                notifications: notifications, counters: counterDocuments, timing: WriteTiming(writeDeadline: .zero),
                metrics: ServiceMetrics(factory: NOOPMetricsHandler.instance), logger: Logger(label: "test")
            ) { _ in }
            func unread(_ n: Int) -> BSONDocument { ["_id": .objectID(ObjectID.generate(milliseconds: Int64(n))), "recipientId": "r", "readAt": .null] }
            _ = try await notifications.insert([unread(1), unread(2)])
            // A counter known to be wrong (a write of unknown outcome marked it).
            try await counterDocuments.insertOne(["_id": "r", "unread": .int64(5), "seq": .int64(1), "stale": true])
            // A third write commits...
            try await notifications.insertOne(unread(3))
            #expect(try await counters.counts("r").unread == 3, "a stale counter is recounted")
            // ...and its $inc lands only now, after the recount read the counter.
            _ = try await counterDocuments.update(["_id": "r"], ["$inc": ["unread": .int64(1), "seq": .int64(1)]])
            // `counterSettle` is one second here (no deadline, the clock skew).
            for _ in 0..<6 {
                try await Task.sleep(for: .milliseconds(400))
                #expect(try await counters.counts("r").unread == 3)
            }
            let counter = try await counterDocuments.findOne(["_id": "r"])
            #expect(counter?["stale"]?.bool == false, "reconciled")
            #expect(counter?["unread"]?.int64 == 3, "neither lost nor doubled")
            // Reconciled: served from the counter again, and the next $inc is exact.
            try await notifications.insertOne(unread(4))
            try await counters.announce(["r"], token: "next", inserts: true)
            #expect(try await counters.settle(["r": .created(1)], token: "next"))
            #expect(try await counters.counts("r").unread == 4)
        }
    }
}
