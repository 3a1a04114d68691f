import Logging
import Metrics
import MongoStore
@testable import NotificationsCore
import Testing
import TestSupport

/// A fan-out batch's counter changes land once per user, whichever run sends them (issue 17,
/// item 3), against a real MongoDB-wire server.
@Suite("Fan-out counters: a batch's +1 lands once")
struct FanoutCounterTests {
    /// The owner's insert applied, then it froze before its `+1`s. Another instance resumed the
    /// batch (all duplicates: counters marked stale, recounted and reconciled). Then the owner
    /// woke and sent its `+1`s. Before the fix they were applied (the counter `$inc` was not
    /// fenced): every badge stayed one too high for good, a recount no longer pending.
    @Test func aFrozenOwnersLatePlusOnesChangeNothingAfterTheResume() async throws {
        try await withMongoPool { pool in
            let store = InsertEachTests().store(pool)
            try await store.createIndexes()
            let users = (0..<40).map { "fan-\($0)" }
            let time = SystemWallClock().now()
            let notifications = users.map { user in
                Notification(
                    id: ObjectIDs.derived(at: time, from: "test:ev\n\(user)"), recipientId: user, type: "t", actorId: "a", title: nil, body: nil,
                    dataJSON: "{}", createdAt: time, readAt: nil)
            }
            let marker = "batch-of-ev"
            // The owner: counters made before its insert, the insert applied, then frozen.
            try await store.counters.ensureCounters(users)
            _ = try await pool.collection("notifications").insert(notifications.map(MongoNotificationStore.document))
            // The taker resumes the batch.
            let resumed = await store.insert(
                creates: [], batches: [FanoutBatch(notifications: notifications, resumed: true, candidates: users, marker: marker)], within: .seconds(2))
            #expect(try resumed.batches[0].get().isEmpty, "all stored by the first run")
            // Readers recount, then reconcile once `seq` stood still for the settle time.
            for user in users { #expect(try await store.counts(recipientId: user).unread == 1) }
            try await Task.sleep(for: store.counters.settle + .milliseconds(200))
            for user in users { #expect(try await store.counts(recipientId: user).unread == 1) }
            let reconciled = try await pool.collection("user_counters").find(["_id": ["$in": .array(users.map(BSONValue.string))]])
            #expect(reconciled.count == users.count && reconciled.allSatisfy { $0["stale"]?.bool == false && $0["unread"]?.int64 == 1 })
            // The owner wakes: the `+1`s its insert would send next.
            try await store.counters.incrementMany(users, marker: marker, ensured: true)
            let after = try await pool.collection("user_counters").find(["_id": ["$in": .array(users.map(BSONValue.string))]])
            #expect(after.allSatisfy { $0["unread"]?.int64 == 1 && $0["stale"]?.bool == false }, "\(after.prefix(2))")
            for user in users { #expect(try await store.counts(recipientId: user).unread == 1) }
        }
    }

    /// A batch written twice by fresh runs (the same marker) counts once; another batch counts again.
    @Test func aBatchsPlusOneIsIdempotentPerMarker() async throws {
        try await withMongoPool { pool in
            let store = InsertEachTests().store(pool)
            let users = ["m-1", "m-2", "m-3"]
            try await store.counters.ensureCounters(users)
            try await store.counters.incrementMany(users, marker: "one", ensured: true)
            try await store.counters.incrementMany(users, marker: "one", ensured: true)
            try await store.counters.incrementMany(users + ["m-1"], marker: "two", ensured: true)
            let counters = try await pool.collection("user_counters").find(["_id": ["$in": .array(users.map(BSONValue.string))]], sort: ["_id": 1])
            #expect(counters.map { $0["unread"]?.int64 } == [3, 2, 2])
        }
    }
}

/// A takeover is conditional on the lease having run out (issue 17, item 12): a sweep that read
/// the record while the lease had run out does not take it once the owner has renewed it.
@Suite("Fan-out takeover: only an expired lease")
struct FanoutTakeoverTests {
    @Test func aRenewedLeaseIsNotTakenOver() async throws {
        try await withMongoPool { pool in
            let events = EventStore(pool: pool)
            let now = SystemWallClock().now()
            let event = NewEvent(id: "ev", type: "t", actorId: "a", audience: .followersOf("a"))
            let record = EventRecord(
                key: "test:ev", eventId: "ev", event: event, status: "in_progress", created: 0, batch: 0, cursor: .null, batchTime: nil,
                batchEnd: nil, leaseToken: "owner", leaseUntil: now.advanced(by: .seconds(-1)), createdAt: now,
                expiresAt: now.advanced(by: .seconds(3600)))
            _ = try await events.claim(record, now: now)
            // What a sweep read: the lease had run out.
            let seen = try #require(try await events.jobs.abandoned(now: now, limit: 5).first.flatMap(EventStore.record))
            // The owner was alive after all and renews before the takeover lands.
            #expect(try await events.renewLease(record, until: now.advanced(by: .seconds(30))))
            #expect(try await events.jobs.takeOver(seen.lease, now: now, token: "taker", leaseUntil: now.advanced(by: .seconds(30))) == nil)
            #expect(try await events.find(key: "test:ev")?.leaseToken == "owner")
            // Once it really runs out, it is taken.
            let later = now.advanced(by: .seconds(31))
            let taken = try await events.jobs.takeOver(seen.lease, now: later, token: "taker", leaseUntil: later.advanced(by: .seconds(30)))
            #expect(taken.flatMap(EventStore.record)?.leaseToken == "taker")
        }
    }
}
