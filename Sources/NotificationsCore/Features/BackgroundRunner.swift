public import Logging
internal import Synchronization

/// How a run of resumable background work ended.
enum BackgroundOutcome: Sendable, Equatable {
    case completed(count: Int)
    /// Asked to stop between batches (shutdown): resumable by any instance after the lease.
    case stopped(count: Int)
    /// Someone else holds the work now.
    case leaseLost
}

/// Runs one kind of resumable background work (event fan-outs, all-at-once operations) on this
/// instance: counts what runs in a gauge and stops it between batches on shutdown (it stays
/// resumable: any instance takes it over once its lease runs out).
public final class BackgroundRunner: Sendable {
    private let running = Atomic<Int>(0)
    private let stopping = Atomic<Bool>(false)
    /// "fan-out", "bulk operation": for the logs.
    private let kind: String
    private let inProgress: @Sendable (Int) -> Void
    private let logger: Logger

    public init(kind: String, logger: Logger, inProgress: @escaping @Sendable (Int) -> Void = { _ in }) {
        self.kind = kind
        self.logger = logger
        self.inProgress = inProgress
    }

    var isStopping: Bool { stopping.load(ordering: .relaxed) }
    public var count: Int { running.load(ordering: .relaxed) }

    /// Stops all of this runner's work after its current batch.
    public func stop() {
        stopping.store(true, ordering: .relaxed)
    }

    /// Runs `work` in the background; `completed` is told the count and how long it took.
    func start(
        key: String, _ work: @escaping @Sendable (_ stop: @escaping @Sendable () -> Bool) async throws -> BackgroundOutcome,
        completed: @escaping @Sendable (Int, Duration) -> Void = { _, _ in }
    ) {
        guard !isStopping else { return }
        inProgress(running.wrappingAdd(1, ordering: .relaxed).newValue)
        Task.detached { [self] in
            let started = ContinuousClock.now
            do {
                switch try await work({ [self] in isStopping }) {
                case .completed(let count):
                    completed(count, ContinuousClock.now - started)
                    logger.info("Background \(kind) completed", metadata: ["key": "\(key)", "count": "\(count)"])
                case .stopped(let count):
                    logger.info("Background \(kind) paused for shutdown; another instance resumes it", metadata: ["key": "\(key)", "count": "\(count)"])
                case .leaseLost:
                    logger.warning("Background \(kind) lost its lease; its new owner goes on", metadata: ["key": "\(key)"])
                }
            } catch {
                logger.warning("Background \(kind) failed; it is resumed after its lease", metadata: ["key": "\(key)", "error": "\(error)"])
            }
            inProgress(running.wrappingSubtract(1, ordering: .relaxed).newValue)
        }
    }
}
