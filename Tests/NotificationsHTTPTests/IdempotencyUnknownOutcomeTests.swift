import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import MongoStore
import NotificationsCore
import NotificationsHTTP
import RedisClient
import Testing
import TestSupport

/// Idempotency when a write times out after the server applied it, or a cached tier disagrees
/// with MongoDB (issue 7, items 1–4 and 6). Faults are real: a frozen or killed MongoDB, a
/// Redis that refuses writes, a holder that outlives its lease.
@Suite("Idempotency-Key: writes of unknown outcome")
struct IdempotencyUnknownOutcomeTests {
    static let fingerprint = IdempotencyStore.fingerprint(method: "POST", path: "/v1/notifications", body: Array(IdempotencyTests.body.utf8))
    static let response = IdempotencyRecord.StoredResponse(status: 201, body: Array(#"{"stored":true}"#.utf8), contentType: "application/json", location: nil)

    static func claim(_ store: IdempotencyStore, _ key: String) async throws -> IdempotencyStore.Claim? {
        guard case .proceed(let claim) = try await store.begin(scope: "test", key: key, fingerprint: fingerprint) else {
            Issue.record("expected to claim \(key)")
            return nil
        }
        return claim
    }

    /// Item 1: the claim's insert times out (MongoDB frozen) and is applied when MongoDB resumes.
    @Test func aClaimWhoseInsertTimedOutIsUndoneOnceMongoDBAnswers() async throws {
        try await withHarness { harness in
            harness.mongo.pause()
            let frozen = try await IdempotencyTests.post(harness.client, key: "frozen-claim")
            harness.mongo.resume()
            #expect(frozen.status == .serviceUnavailable)
            // Before the fix the late claim answered 409 for the whole 60 s lease.
            let retried = try await retrying(for: .seconds(12)) {
                try await IdempotencyTests.post(harness.client, key: "frozen-claim")
            } until: { $0.status == .created }
            #expect(retried.status == .created)
            #expect(retried.headers[IdempotencyTests.replayHeader] == nil)
            #expect(try await IdempotencyTests.count(harness.client) == 1)
        }
    }

    /// Item 2: Redis kept a stale picture (its writes were refused while the holder completed one
    /// key and released another); another instance must follow MongoDB, not answer 409.
    @Test func aCachedTierNeverAnswersInProgressForMongoDB() async throws {
        try await withHarness { harness in
            let store = harness.environment.services.idempotency
            guard let completed = try await Self.claim(store, "marker-completed"), let released = try await Self.claim(store, "marker-released") else { return }
            try await harness.withRedisAdmin { _ = try await $0.send(RedisCommand("CLIENT", ["PAUSE", "2000", "WRITE"])) }
            await store.complete(completed, response: Self.response)
            await store.release(released)
            try await harness.withRedisAdmin { _ = try await $0.send(RedisCommand("CLIENT", ["UNPAUSE"])) }
            try await harness.withOtherInstance { other in
                let replay = try await other.services.idempotency.begin(scope: "test", key: "marker-completed", fingerprint: Self.fingerprint)
                guard case .replay(let stored) = replay else {
                    Issue.record("expected the stored response, got \(replay)")
                    return
                }
                #expect(stored == Self.response)
                let fresh = try await other.services.idempotency.begin(scope: "test", key: "marker-released", fingerprint: Self.fingerprint)
                guard case .proceed = fresh else {
                    Issue.record("expected a fresh claim, got \(fresh)")
                    return
                }
            }
        }
    }

    /// Item 3: the notification is stored and the client answered, but MongoDB dies before the
    /// response is stored: it is stored in the background once MongoDB is back, well before
    /// the claim's lease would let another instance run the request again.
    @Test func aResponseMongoDBMissedIsStoredOnceMongoDBIsBack() async throws {
        try await withHarness { harness in
            let store = harness.environment.services.idempotency
            guard let claim = try await Self.claim(store, "lost-response") else { return }
            _ = try await harness.environment.services.feed.create(NewNotification(recipientId: "idem-user", type: "x", title: "once"), plannedID: claim.plannedID)
            harness.mongo.kill()
            await store.complete(claim, response: Self.response)
            try await harness.mongo.restart()
            let records = harness.environment.mongoPool.collection("idempotency_records")
            let record = try await retrying(for: .seconds(15)) { try await records.findOne(["_id": "test:lost-response"]) } until: {
                $0?["state"]?.string == "completed"
            }
            #expect(record?["state"]?.string == "completed", "stored by the background retry, not left in progress for the 60 s lease")
            try await harness.withOtherInstance { other in
                let repeated = try await other.services.idempotency.begin(scope: "test", key: "lost-response", fingerprint: Self.fingerprint)
                guard case .replay(let stored) = repeated else {
                    Issue.record("expected the stored response, got \(repeated)")
                    return
                }
                #expect(stored == Self.response)
            }
            #expect(try await IdempotencyTests.count(harness.client) == 1)
        }
    }

    /// Issue 17, item 11: the client got its answer, MongoDB froze before the response was
    /// stored, and the instance died (so its background retry died too). Another instance
    /// answers a repeat with the same response, even while MongoDB is still frozen. Before the
    /// fix the response lived only in the dead instance's memory: the repeat found the claim in
    /// progress (409), and after the lease ran the request again.
    @Test func aResponseTheClientGotOutlivesItsInstance() async throws {
        try await withHarness { harness in
            let store = harness.environment.services.idempotency
            guard let claim = try await Self.claim(store, "outlives") else { return }
            harness.mongo.pause()
            await store.complete(claim, response: Self.response)
            // This instance is gone from here on: only what it wrote outside its memory counts.
            let repeated = try await harness.withOtherInstance { other in
                try await other.services.idempotency.begin(scope: "test", key: "outlives", fingerprint: Self.fingerprint)
            }
            harness.mongo.resume()
            guard case .replay(let stored) = repeated else {
                Issue.record("expected the response the client got, got \(repeated)")
                return
            }
            #expect(stored == Self.response)
        }
    }

    /// Item 3: the holder stored the notification, answered, and died before storing the response.
    /// After the lease another instance runs the request again: it must find the notification
    /// (same planned id) instead of creating a second one; and if that run fails too, the next
    /// one still finds it.
    @Test func aTakeoverOfAnAnsweredClaimCreatesNothingTwice() async throws {
        try await withHarness(configure: { $0.idempotencyClaimLeaseMilliseconds = 1000 }) { harness in
            let request = NewNotification(recipientId: "idem-user", type: "x", title: "once")
            // The holder: another instance that answers and then dies (its pools closed, its queues gone).
            let (planned, created) = try await harness.withOtherInstance { holder -> (String, NotificationsCore.Notification?) in
                guard let claim = try await Self.claim(holder.services.idempotency, "answered") else { return ("", nil) }
                return (claim.plannedID, try await holder.services.feed.create(request, plannedID: claim.plannedID))
            }
            try await Task.sleep(for: .milliseconds(1200))
            let store = harness.environment.services.idempotency
            guard case .proceed(let takeover) = try await store.begin(scope: "test", key: "answered", fingerprint: Self.fingerprint) else {
                Issue.record("expected to take the abandoned claim over")
                return
            }
            #expect(takeover.plannedID == planned)
            // This run fails before it answers (say MongoDB blinked): it gives the key back.
            await store.release(takeover)
            guard case .proceed(let next) = try await store.begin(scope: "test", key: "answered", fingerprint: Self.fingerprint) else {
                Issue.record("expected the key back")
                return
            }
            #expect(next.plannedID == planned, "giving an inherited claim back keeps its planned id")
            let again = try await harness.environment.services.feed.create(request, plannedID: next.plannedID)
            #expect(again.id == created?.id)
            #expect(try await IdempotencyTests.count(harness.client) == 1)
            #expect(try await harness.unreadCount("idem-user") == 1, "adopting the stored notification does not count it twice")
        }
    }

    /// Item 4: a holder that outlived its lease completes after another instance took the key over.
    @Test func aHolderWhoseClaimWasTakenOverStoresNothing() async throws {
        try await withHarness(configure: { $0.idempotencyClaimLeaseMilliseconds = 1000 }) { harness in
            let store = harness.environment.services.idempotency
            guard let first = try await Self.claim(store, "taken") else { return }
            try await Task.sleep(for: .milliseconds(1200))
            try await harness.withOtherInstance { other in
                let takeover = try await other.services.idempotency.begin(scope: "test", key: "taken", fingerprint: Self.fingerprint)
                guard case .proceed = takeover else {
                    Issue.record("expected a takeover, got \(takeover)")
                    return
                }
                await store.complete(first, response: Self.response)
                let redisCopy = try await harness.withRedisAdmin { try await $0.send(.get("idem:{test:taken}")) }
                #expect(redisCopy == .null, "no Redis copy of a response MongoDB refused")
                let again = try await store.begin(scope: "test", key: "taken", fingerprint: Self.fingerprint)
                guard case .inProgress = again else {
                    Issue.record("the first holder's memory answered: \(again)")
                    return
                }
            }
        }
    }

    /// Item 6: Redis holds a recent copy, MongoDB the record for the whole retention.
    @Test func redisCopiesLiveShorterThanTheRetention() async throws {
        try await withHarness { harness in
            #expect(try await IdempotencyTests.post(harness.client, key: "copy-ttl").status == .created)
            let ttl = try await harness.withRedisAdmin { try await $0.send(RedisCommand("PTTL", ["idem:{test:copy-ttl}"])) }
            guard case .integer(let milliseconds) = ttl else {
                Issue.record("expected a TTL, got \(ttl)")
                return
            }
            #expect(milliseconds > 0 && milliseconds <= 3_600_000)
        }
    }
}
