import Logging
import Metrics
import MongoStore
@testable import NotificationsCore
import Testing
import TestSupport

/// The store's side of group commit, against a real MongoDB-wire server.
@Suite("Store: one insert for a batch of creates, an answer for each")
struct InsertEachTests {
    static func notification(_ recipient: String, id: String = ObjectIDs.new(at: SystemWallClock().now()), data: String = "{}") -> Notification {
        Notification(id: id, recipientId: recipient, type: "t", actorId: nil, title: nil, body: nil, dataJSON: data,
                     createdAt: SystemWallClock().now(), readAt: nil)
    }

    func store(_ pool: MongoClientPool) -> MongoNotificationStore {
        MongoNotificationStore(pool: pool, metrics: ServiceMetrics(factory: NOOPMetricsHandler.instance), logger: Logger(label: "test"))
    }

    @Test func aBatchCountsEveryRecipientOncePerNotificationAndAdoptsAPlannedDuplicate() async throws {
        try await withMongoPool { pool in
            let store = store(pool)
            try await store.createIndexes()
            let planned = Self.notification("carol")
            #expect(try await store.insertEach([planned], within: .seconds(2))[0].get().created)
            // Two for alice, one for bob, and carol's planned id again (an idempotent request's second run).
            let batch = [Self.notification("alice"), Self.notification("alice"), Self.notification("bob"), planned]
            let answers = await store.insertEach(batch, within: .seconds(2))
            #expect(try answers.map { try $0.get().created } == [true, true, true, false])
            #expect(try answers[3].get().notification.id == planned.id)
            #expect(try await store.counts(recipientId: "alice").unread == 2)
            #expect(try await store.counts(recipientId: "bob").unread == 1)
            #expect(try await store.counts(recipientId: "carol").unread == 1, "the adopted duplicate is not counted twice")
            #expect(try await store.page(recipientId: "alice", before: nil, limit: 10, filter: .init(status: .all, archived: .include)).count == 2)
        }
    }

    /// A document that fails in an unordered insert fails alone: here a second copy of an id in
    /// the same batch (a per-document duplicate-key error), answered with the stored one.
    @Test func aFailedDocumentFailsOnlyItsOwnAnswer() async throws {
        try await withMongoPool { pool in
            let store = store(pool)
            try await store.createIndexes()
            let twin = Self.notification("erin")
            let answers = await store.insertEach([Self.notification("dave"), twin, twin, Self.notification("dave")], within: .seconds(2))
            #expect(try answers.map { try $0.get().created } == [true, true, false, true], "\(answers)")
            #expect(try await store.counts(recipientId: "dave").unread == 2)
            #expect(try await store.counts(recipientId: "erin").unread == 1)
        }
    }
}
