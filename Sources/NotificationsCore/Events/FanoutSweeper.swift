internal import Logging
public import ServiceLifecycle

/// On every instance: finds fan-outs whose owner stopped renewing its lease (crash, SIGKILL,
/// a MongoDB outage under the request, a shutdown between batches), takes them over with a new
/// lease token and finishes them. Checks every third of the lease (at most every 5 s).
public struct FanoutSweeper: Service {
    let service: EventService
    let interval: Duration

    public init(service: EventService) {
        self.service = service
        self.interval = min(service.fanout.lease / 3, .seconds(5))
    }

    public func run() async throws {
        await repeatUntilShutdown(every: interval) { await sweep() }
        service.runner.stop()
    }

    /// One pass: takes over what it can (a few at a time) and starts it in the background.
    func sweep() async {
        let now = service.clock.now()
        do {
            for record in try await service.events.abandoned(now: now, limit: 5) {
                guard !service.runner.isStopping else { return }
                let takenAt = service.clock.now()
                let leaseUntil = takenAt.advanced(by: service.fanout.lease)
                if let taken = try await service.events.takeOver(record, now: takenAt, token: FanoutRunner.newToken(), leaseUntil: leaseUntil) {
                    service.logger.notice("Resuming a fan-out whose owner stopped", metadata: ["event": "\(taken.key)", "batch": "\(taken.batch)"])
                    service.runner.start(taken, fanout: service.fanout)
                }
            }
        } catch {
            service.logger.debug("Fan-out sweep failed; retrying", metadata: ["error": "\(error)"])
        }
    }
}
