public import Logging
internal import MongoStore
internal import Synchronization

/// Deletes, in the background, documents that must not stay although MongoDB could not be
/// told so during the request: inserts whose outcome is unknown, and idempotency claims of
/// failed requests.
///
/// When an insert times out or its connection fails, the request is answered 503, but the
/// server may still apply the insert later (a frozen MongoDB that comes back processes what it
/// had received). So the document is deleted in the background, twice a second apart once
/// MongoDB answers again, retrying while it does not (for at most `giveUpAfter`). The answer
/// the client got (nothing was written) thereby stays true.
final class BackgroundDeleter: Sendable {
    private let logger: Logger
    private let pending = Atomic<Int>(0)
    static let maxPending = 10_000
    static let giveUpAfter = Duration.seconds(600)

    init(logger: Logger) {
        self.logger = logger
    }

    func deleteEventually(_ filter: BSONDocument, from collection: MongoCollection) {
        guard pending.wrappingAdd(1, ordering: .relaxed).newValue <= Self.maxPending else {
            pending.wrappingSubtract(1, ordering: .relaxed)
            logger.error("Too many unconfirmed writes to compensate; a late write may remain", metadata: ["filter": "\(filter)"])
            return
        }
        Task.detached { [self] in
            defer { pending.wrappingSubtract(1, ordering: .relaxed) }
            let clock = ContinuousClock()
            let deadline = clock.now + Self.giveUpAfter
            var confirmations = 0
            var removed = 0
            while confirmations < 2 && clock.now < deadline {
                try? await Task.sleep(for: .seconds(1))
                do {
                    removed += try await collection.delete(filter, limit: 1)
                    confirmations += 1
                } catch {
                    confirmations = 0
                }
            }
            if removed > 0 { logger.notice("Removed a document left by a failed request", metadata: ["filter": "\(filter)"]) }
        }
    }
}
