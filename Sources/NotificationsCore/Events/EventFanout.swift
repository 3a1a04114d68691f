internal import Crypto
internal import Logging
internal import MongoStore
internal import Resilience

/// Writes an event's notifications, batch by batch, exactly once per recipient.
///
/// For each batch of at most 1000 recipients (the next `userIds`, or the next page of
/// followers by id), and never more than one insert command holds (by the limits the server
/// reports: with a large `data`, batches are smaller, so each is still one command):
/// 1. fix the batch's time and exact range (the cursor after it) in the progress record and
///    renew the lease, only if the lease is still ours (an owner that froze and lost it stops
///    here); while the batch writes, the lease is renewed every third of it;
/// 2. skip the actor and recipients who muted the type or turned `in_app` off (their
///    preferences in one Redis round trip plus one MongoDB query for the misses);
/// 3. one unordered insert of the batch's notifications, ids derived from (event, recipient)
///    and the batch time, so a batch written again skips what is already there; it goes
///    through the writer that single creates use (`NotificationWriter`), together with
///    whatever creates are waiting;
/// 4. counters in a constant number of commands (`UserCounters`), and one Redis round trip
///    to drop the recipients' cached feeds, one to publish to open streams;
/// 5. move the cursor and the count, again only under our lease.
/// A batch found with its time already fixed was interrupted (crash, outage, a frozen owner):
/// it is written again with the same time over the same range (followers who arrived inside
/// the range meanwhile included, none shifted into the next batch), and the counters of every
/// candidate of it are marked for a recount (which of them the first run incremented is
/// unknown, and someone eligible then may have muted the type since).
struct EventFanout: Sendable {
    let events: EventStore
    let followers: FollowerStore
    let preferences: PreferenceService
    let writer: NotificationWriter
    let metrics: ServiceMetrics
    let lease: Duration
    let clock: any WallClock
    let logger: Logger

    static let batchSize = 1000

    /// Runs batches until the fan-out is complete, the lease is lost, or `stop()` is true.
    func run(_ start: EventRecord, stop: @Sendable () -> Bool = { false }) async throws -> BackgroundOutcome {
        var record = start
        let limit = try await batchLimit(record.event)
        while true {
            if stop() { return .stopped(count: record.created) }
            let resumed = record.batchTime != nil
            let (recipients, next) = try await resumed ? sameBatch(record, limit: limit) : nextBatch(record, limit: limit)
            let now = clock.now()
            // An empty next page is the end; an interrupted range found empty (everyone in it
            // unfollowed meanwhile) is a batch like another, and the pages after it remain.
            guard !recipients.isEmpty || resumed else {
                guard try await events.complete(record, at: now) else { return .leaseLost }
                return .completed(count: record.created)
            }
            let time = record.batchTime ?? now
            guard try await events.startBatch(record, time: time, end: next, leaseUntil: now.advanced(by: lease)) else { return .leaseLost }
            // A batch may take longer than the lease (a slow server, a resumed batch that is
            // mostly duplicates); a live owner losing its lease mid-batch would hand the batch to
            // a taker that loses it the same way, for ever. A renewal error (a timeout) is tried
            // again at the next tick; the fenced finish below tells whether the lease is ours.
            let written = try await whileRenewing(every: lease / 3, { [record, events, clock, lease] in
                (try? await events.renewLease(record, until: clock.now().advanced(by: lease))) != false
            }) {
                try await write(record, recipients: recipients, time: time, resumed: resumed)
            }
            guard try await events.finishBatch(record, cursor: next, created: written, leaseUntil: clock.now().advanced(by: lease)) else {
                return .leaseLost
            }
            record.batch += 1
            record.cursor = next
            record.batchTime = nil
            record.batchEnd = nil
            record.created += written
        }
    }

    /// The most recipients of one batch: 1000, or fewer when their notifications (this event's,
    /// for the longest recipient id) would not fit in one insert command.
    func batchLimit(_ event: NewEvent) async throws -> Int {
        let sample = Notification(
            id: ObjectIDs.derived(at: clock.now(), from: event.id), recipientId: event.actorId, type: event.type, actorId: event.actorId,
            title: event.title, body: event.body, dataJSON: event.dataJSON, createdAt: clock.now(), readAt: nil,
            expiresAt: event.expiresAt)
        return min(Self.batchSize, try await writer.notificationsPerInsert(like: sample))
    }

    /// The next batch's recipients and the cursor after it.
    private func nextBatch(_ record: EventRecord, limit: Int) async throws -> ([String], BSONValue) {
        switch record.event.audience {
        case .userIDs(let ids):
            let start = min(Int(record.cursor.int64 ?? 0), ids.count)
            let end = min(start + limit, ids.count)
            return (Array(ids[start..<end]), .int64(Int64(end)))
        case .followersOf(let user):
            let page = try await followers.page(user: user, after: record.cursor.string, limit: limit)
            return (page, page.last.map(BSONValue.string) ?? record.cursor)
        }
    }

    /// An interrupted batch's recipients: exactly its stored range (a record written before
    /// ranges were stored has none: its batch is read as a next batch would be).
    private func sameBatch(_ record: EventRecord, limit: Int) async throws -> ([String], BSONValue) {
        guard let end = record.batchEnd else { return try await nextBatch(record, limit: limit) }
        switch record.event.audience {
        case .userIDs(let ids):
            let start = min(Int(record.cursor.int64 ?? 0), ids.count)
            let stop = min(max(start, Int(end.int64 ?? 0)), ids.count)
            return (Array(ids[start..<stop]), end)
        case .followersOf(let user):
            guard let last = end.string else { return try await nextBatch(record, limit: limit) }
            return (try await followers.range(user: user, after: record.cursor.string, through: last), end)
        }
    }

    /// The batch's name in the counters it increments: short (each counter keeps the last 64),
    /// the same for every run of the batch, different for every other batch.
    static func marker(_ record: EventRecord) -> String {
        let digest = SHA256.hash(data: Array("\(record.key)\n\(record.batch)".utf8))
        return digest.prefix(12).hexString
    }

    /// Writes one batch; returns how many recipients it is for (after skipping).
    private func write(_ record: EventRecord, recipients: [String], time: Timestamp, resumed: Bool) async throws -> Int {
        let event = record.event
        let candidates = recipients.filter { $0 != event.actorId }
        let settings = try await preferences.lookup(users: candidates)
        let eligible = candidates.filter { settings[$0]?.suppression(of: event.type) == nil }
        metrics.eventRecipientsSuppressed(recipients.count - eligible.count)
        let notifications = eligible.map { recipient in
            Notification(
                id: ObjectIDs.derived(at: time, from: "\(record.key)\n\(recipient)"), recipientId: recipient, type: event.type,
                actorId: event.actorId, title: event.title, body: event.body, dataJSON: event.dataJSON, createdAt: time, readAt: nil,
                expiresAt: event.expiresAt)
        }
        _ = try await writer.fanout(notifications, resumed: resumed, candidates: candidates, marker: Self.marker(record))
        if resumed { logger.info("Resumed an interrupted fan-out batch", metadata: ["event": "\(record.key)", "batch": "\(record.batch)"]) }
        return eligible.count
    }
}
