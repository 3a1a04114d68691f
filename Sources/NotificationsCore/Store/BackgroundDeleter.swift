internal import Logging
internal import MongoStore

/// Deletes, in the background, documents that must not stay although MongoDB could not be
/// told so during the request: inserts whose outcome is unknown.
///
/// When an insert times out or its connection fails, the request is answered 503, but the
/// server may still apply the insert later (a frozen MongoDB that comes back processes what it
/// had received). So the document is deleted in the background, twice a second apart once
/// MongoDB answers again. One worker per collection deletes whatever is due in one command
/// (`_id: {$in: [...]}`), backing off with jitter while MongoDB does not answer (`RetryQueue`).
/// The answer the client got (nothing was written) thereby stays true.
final class BackgroundDeleter: Sendable {
    let queue: RetryQueue<BSONValue>

    init(collection: MongoCollection, metrics: ServiceMetrics, logger: Logger) {
        var policy = RetryQueue<BSONValue>.Policy()
        policy.confirmations = 2
        queue = RetryQueue(.lateInserts, policy: policy, metrics: metrics, logger: logger) { ids in
            _ = try await collection.delete(["_id": ["$in": .array(ids)]], limit: 0)
        } completed: { ids in
            logger.debug("Deleted documents left by failed requests (if they were there)", metadata: ["count": "\(ids.count)"])
        }
    }

    func deleteEventually(id: BSONValue) {
        queue.enqueue(id)
    }
}
