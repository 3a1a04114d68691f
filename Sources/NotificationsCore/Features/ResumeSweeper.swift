public import Logging
public import ServiceLifecycle

/// Resumable background work of one kind (event fan-outs, all-at-once operations), as the
/// sweeper sees it.
public protocol Resumable: Sendable {
    /// How long an owner that renews nothing keeps its work.
    var lease: Duration { get }
    /// Takes over what owners abandoned (crash, SIGKILL, a MongoDB outage under the request, a
    /// shutdown between batches), a few at a time, and starts it in the background.
    func resumeAbandoned() async throws
    /// Stops this instance's runs after their current batch (shutdown).
    func stopRunning()
}

/// On every instance: resumes abandoned background work of every kind. Checks every third of
/// the shortest lease (at most every 5 s).
public struct ResumeSweeper: Service {
    let work: [any Resumable]
    let interval: Duration
    let logger: Logger

    public init(_ work: [any Resumable], logger: Logger) {
        self.work = work
        self.logger = logger
        self.interval = min(work.map { $0.lease / 3 }.min() ?? .seconds(5), .seconds(5))
    }

    public func run() async throws {
        await repeatUntilShutdown(every: interval) { await sweep() }
        for kind in work { kind.stopRunning() }
    }

    func sweep() async {
        for kind in work {
            do {
                try await kind.resumeAbandoned()
            } catch {
                logger.debug("Resume sweep failed; retrying", metadata: ["error": "\(error)"])
            }
        }
    }
}
