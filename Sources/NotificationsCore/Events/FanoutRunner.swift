public import Logging
internal import Synchronization

/// Runs fan-outs in the background on this instance: counts them in the
/// `event_fanouts_in_progress` gauge and stops them between batches on shutdown (they stay
/// resumable: any instance takes them over once their lease runs out).
public final class FanoutRunner: Sendable {
    private let running = Atomic<Int>(0)
    private let stopping = Atomic<Bool>(false)
    private let metrics: ServiceMetrics
    private let logger: Logger

    public init(metrics: ServiceMetrics, logger: Logger) {
        self.metrics = metrics
        self.logger = logger
    }

    var isStopping: Bool { stopping.load(ordering: .relaxed) }
    public var inProgress: Int { running.load(ordering: .relaxed) }

    /// Stops every fan-out of this instance after its current batch.
    public func stop() {
        stopping.store(true, ordering: .relaxed)
    }

    func start(_ record: EventRecord, fanout: EventFanout) {
        guard !isStopping else { return }
        metrics.fanoutsInProgress(running.wrappingAdd(1, ordering: .relaxed).newValue)
        Task.detached { [self] in
            let started = ContinuousClock.now
            do {
                switch try await fanout.run(record, stop: { [self] in isStopping }) {
                case .completed(let created):
                    metrics.eventFanout(ContinuousClock.now - started)
                    metrics.event(.accepted)
                    logger.info("Background fan-out completed", metadata: ["event": "\(record.key)", "created": "\(created)"])
                case .stopped(let created):
                    logger.info("Background fan-out paused for shutdown; another instance resumes it", metadata: ["event": "\(record.key)", "created": "\(created)"])
                case .leaseLost:
                    logger.warning("Background fan-out lost its lease; its new owner goes on", metadata: ["event": "\(record.key)"])
                }
            } catch {
                logger.warning("Background fan-out failed; it is resumed after its lease", metadata: ["event": "\(record.key)", "error": "\(error)"])
            }
            metrics.fanoutsInProgress(running.wrappingSubtract(1, ordering: .relaxed).newValue)
        }
    }

    static func newToken() -> String {
        (0..<2).map { _ in String(UInt64.random(in: 0...UInt64.max), radix: 36) }.joined(separator: "-")
    }
}
