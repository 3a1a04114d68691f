internal import Logging
internal import MongoStore

/// Deletes, in the background, notifications that must not stay although MongoDB could not be
/// told so during the request: inserts whose outcome is unknown.
///
/// When an insert times out or its connection fails, the request is answered 503, but the
/// server may still apply the insert later (a frozen MongoDB that comes back processes what it
/// had received). So the document is deleted in the background, twice a second apart once
/// MongoDB answers again. One worker per collection deletes whatever is due in one command,
/// backing off with jitter while MongoDB does not answer (`RetryQueue`). Each insert carries
/// its own `run` token and only that run's copy is deleted: an idempotent request run again
/// (same planned id) that adopted or re-inserted the document keeps it. Once a deletion is
/// confirmed, `removed` tells the recipient's counter (it may have been decremented for the
/// ghost while it was visible).
final class BackgroundDeleter: Sendable {
    struct LateInsert: Sendable {
        var id: BSONValue
        var run: String
        var recipient: String
    }

    let queue: RetryQueue<LateInsert>

    init(collection: MongoCollection, metrics: ServiceMetrics, logger: Logger, removed: @escaping @Sendable ([String]) async -> Void) {
        var policy = RetryQueue<LateInsert>.Policy()
        policy.confirmations = 2
        policy.giveUpAfter = .seconds(3600)
        queue = RetryQueue(.lateInserts, policy: policy, metrics: metrics, logger: logger) { inserts in
            _ = try await collection.delete(["$or": .array(inserts.map { .document(["_id": $0.id, "run": .string($0.run)]) })], limit: 0)
        } completed: { inserts in
            logger.debug("Deleted documents left by failed requests (if they were there)", metadata: ["count": "\(inserts.count)"])
            await removed(inserts.map(\.recipient))
        }
    }

    func deleteEventually(_ insert: LateInsert) {
        queue.enqueue(insert)
    }
}
