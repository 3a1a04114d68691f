internal import Logging
public import ServiceLifecycle

/// On every instance: resolves the counter announcements no live writer will settle (its
/// write timed out and it could not resolve them, or it died), once they are older than
/// `WriteTiming.counterSettle` (`UserCounters.sweep`). So a repair owed by an instance
/// killed during a MongoDB outage is made by the others as soon as MongoDB answers.
public struct CounterSweeper: Service {
    let store: MongoNotificationStore
    /// Two passes a confirmation gap apart resolve an announcement: counts converge within
    /// `counterSettle` plus about three intervals.
    let interval: Duration

    public init(store: MongoNotificationStore, interval: Duration = .seconds(2)) {
        self.store = store
        self.interval = interval
    }

    public func run() async throws {
        await repeatUntilShutdown(every: interval, spread: 0.8...1.0) {
            do {
                _ = try await store.counters.sweep()
            } catch {
                store.logger.debug("Counter sweep failed; retrying", metadata: ["error": "\(error)"])
            }
        }
    }
}
