public import Logging
internal import MongoStore

/// `POST /v1/events` and `GET /v1/events/{eventId}`: exactly-once events and their fan-out.
///
/// The event id is claimed in MongoDB (`EventStore`, unique per API key) before anything is
/// written, so concurrent copies on any number of instances, with Redis up or down, give one
/// `accepted` and `duplicate` for the rest. A `userIds` audience, or followers up to
/// `EVENT_SYNC_FANOUT_LIMIT`, is fanned out within the request; a larger one answers
/// `in_progress` and goes on in the background (`BackgroundRunner`). A fan-out interrupted by a
/// failure, a crash or a shutdown is resumed by any instance once its lease runs out
/// (`ResumeSweeper`).
public struct EventService: Sendable {
    let events: EventStore
    let followers: FollowerStore
    let fanout: EventFanout
    let runner: BackgroundRunner
    let retention: Duration
    let syncLimit: Int
    let clock: any WallClock
    let metrics: ServiceMetrics
    let logger: Logger

    public struct Answer: Sendable, Equatable {
        public enum Status: String, Sendable {
            case accepted, duplicate
            case inProgress = "in_progress"
        }

        public var eventId: String
        public var status: Status
        public var notificationsCreated: Int
    }

    public init(
        events: EventStore, followers: FollowerStore, preferences: PreferenceService, writer: NotificationWriter, runner: BackgroundRunner, settings: Settings, metrics: ServiceMetrics, logger: Logger,
        clock: any WallClock = SystemWallClock()
    ) {
        self.events = events
        self.followers = followers
        self.runner = runner
        self.retention = .seconds(settings.eventRetentionSeconds)
        self.syncLimit = settings.eventSyncFanoutLimit
        self.clock = clock
        self.metrics = metrics
        self.logger = logger
        self.fanout = EventFanout(
            events: events, followers: followers, preferences: preferences, writer: writer, metrics: metrics,
            lease: .milliseconds(settings.eventFanoutLeaseMilliseconds), clock: clock, logger: logger)
    }

    static func key(scope: String, eventId: String) -> String { "\(scope):\(eventId)" }

    /// Claims the event and fans it out. Throws `StoreError` when MongoDB fails: before the
    /// claim nothing was written; after it, the fan-out is finished by whichever instance
    /// resumes it, and a retry is a duplicate.
    public func accept(scope: String, _ event: NewEvent) async throws -> Answer {
        let now = clock.now()
        let record = EventRecord(
            key: Self.key(scope: scope, eventId: event.id), eventId: event.id, event: event, status: "in_progress", created: 0, batch: 0,
            cursor: .null, batchTime: nil, batchEnd: nil, leaseToken: LeasedJobs.newToken(), leaseUntil: now.advanced(by: fanout.lease), createdAt: now,
            expiresAt: now.advanced(by: retention))
        if case .existing = try await events.claim(record, now: now) {
            metrics.event(.duplicate)
            return Answer(eventId: event.id, status: .duplicate, notificationsCreated: 0)
        }
        if case .followersOf(let user) = event.audience, try await followers.page(user: user, after: nil, limit: syncLimit + 1).count > syncLimit {
            start(record)
            metrics.event(.inProgress)
            return Answer(eventId: event.id, status: .inProgress, notificationsCreated: 0)
        }
        let started = ContinuousClock.now
        switch try await fanout.run(record) {
        case .completed(let created):
            metrics.eventFanout(ContinuousClock.now - started)
            metrics.event(.accepted)
            return Answer(eventId: event.id, status: .accepted, notificationsCreated: created)
        case .stopped(count: let created):
            return Answer(eventId: event.id, status: .inProgress, notificationsCreated: created)
        case .leaseLost:
            let current = try await events.find(key: record.key)
            return Answer(eventId: event.id, status: .inProgress, notificationsCreated: current?.created ?? 0)
        }
    }

    /// The event as stored for this API key; nil when unknown (or past its retention).
    public func status(scope: String, eventId: String) async throws -> EventRecord? {
        guard let record = try await events.find(key: Self.key(scope: scope, eventId: eventId)), record.expiresAt > clock.now() else { return nil }
        return record
    }
}

extension EventService: Resumable {
    public var lease: Duration { fanout.lease }

    /// Fan-out in the background, on this instance.
    func start(_ record: EventRecord) {
        runner.start(key: record.key, { [fanout] stop in try await fanout.run(record, stop: stop) }) { [metrics] _, duration in
            metrics.eventFanout(duration)
            metrics.event(.accepted)
        }
    }

    public func resumeAbandoned() async throws {
        try await mongoOperation {
            try await events.jobs.takeOverAbandoned(clock: clock, lease: fanout.lease, limit: 5, stopping: { runner.isStopping }) { document in
                guard let taken = EventStore.record(document) else { return }
                logger.notice("Resuming a fan-out whose owner stopped", metadata: ["event": "\(taken.key)", "batch": "\(taken.batch)"])
                start(taken)
            }
        }
    }

    public func stopRunning() { runner.stop() }
}

extension EventService.Answer {
    /// `{"eventId", "status", "notificationsCreated"}`.
    public func write(to json: inout JSONWriter) {
        json.object { object in
            object.string("eventId", eventId)
            object.string("status", status.rawValue)
            object.integer("notificationsCreated", notificationsCreated)
        }
    }
}

extension EventRecord {
    /// `GET /v1/events/{eventId}`: `{"eventId", "type", "status", "notificationsCreated", "createdAt"}`.
    public func write(to json: inout JSONWriter) {
        json.object { object in
            object.string("eventId", eventId)
            object.string("type", event.type)
            object.string("status", status)
            object.integer("notificationsCreated", created)
            object.string("createdAt", createdAt.rfc3339)
        }
    }
}
