internal import Logging
public import ServiceLifecycle

/// The one background task behind every open stream of this instance: heartbeats, and the
/// shared look at MongoDB.
///
/// While Redis push works it checks every 10 s for notifications *written* (`writtenAt`, which
/// a resumed fan-out batch renews) since a look-back before its previous check, so a
/// notification whose publish was lost reaches its streams late, whatever else they received
/// (each stream skips what it already sent). While push is unusable the same look runs every
/// `STREAM_POLL_INTERVAL_MS` (a poll, counted as a fallback) with the users' counts and token
/// revocations, which no push tells of then. Either way it is one query per 1000 users with
/// open streams, not one per stream.
public struct StreamWatcher: Service {
    let hub: StreamHub
    let queries: StreamQueries
    let store: any NotificationStore
    let revocations: TokenRevocations?
    let pollInterval: Duration
    let lookBack: Duration
    let clock: any WallClock

    /// On push, a lost publish arrives within this (plus the check's own time).
    static let pushCheckInterval = Duration.seconds(10)
    /// More than this many found for one user in one look: its streams reset instead.
    static let lookLimit = 200
    static let tick = Duration.milliseconds(100)

    public init(
        hub: StreamHub, queries: StreamQueries, store: any NotificationStore, revocations: TokenRevocations?, pollInterval: Duration,
        clock: any WallClock = SystemWallClock()
    ) {
        self.hub = hub
        self.queries = queries
        self.store = store
        self.revocations = revocations
        self.pollInterval = pollInterval
        self.lookBack = WriteTiming(writeDeadline: store.writeTimeout).lookBack
        self.clock = clock
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            await withDiscardingTaskGroup { group in
                // Four passes a heartbeat: a keep-alive goes out at most a quarter late.
                group.addTask { await repeatUntilShutdown(every: min(.seconds(1), hub.heartbeat / 4)) { hub.heartbeats() } }
                group.addTask { await checks() }
            }
        }
    }

    /// Checks (or polls) at their interval, and at once when push comes back.
    private func checks() async {
        var lastCheckAt = clock.now()
        hub.setCheckFloor(lastCheckAt.advanced(by: .zero - lookBack))
        var lastCheck = ContinuousClock.now
        // A failed look is tried again at the poll interval, not the push check's 10 s: it may
        // be the look asked for when push came back, the one that finds what was published
        // while the subscriber was away.
        var lastFailed = false
        while !Task.isCancelled {
            do { try await Task.sleep(for: Self.tick) } catch { return }
            let push = hub.pushAvailable
            let interval = push && !lastFailed ? Self.pushCheckInterval : pollInterval
            guard hub.takeCheckRequest() || ContinuousClock.now - lastCheck >= interval else { continue }
            let started = clock.now()
            do {
                try await look(since: lastCheckAt.advanced(by: .zero - lookBack), push: push)
                lastCheckAt = started
                hub.setCheckFloor(started.advanced(by: .zero - lookBack))
                lastFailed = false
            } catch {
                // The next look starts from the same point: nothing is skipped.
                hub.logger.warning("Stream check failed; retrying after STREAM_POLL_INTERVAL_MS", metadata: ["error": "\(error)"])
                lastFailed = true
            }
            lastCheck = .now
        }
    }

    /// One shared look for every user with open streams, in batches of up to 1000 users.
    func look(since: Timestamp, push: Bool) async throws {
        if !push { hub.metrics.fallback(.stream) }
        let users = hub.users
        for start in stride(from: 0, to: users.count, by: StreamQueries.usersPerQuery) {
            let batch = Array(users[start..<min(users.count, start + StreamQueries.usersPerQuery)])
            let answers = try await queries.look(
                batch.map { StreamQueries.Request(user: $0, since: .written(since), limit: Self.lookLimit) },
                purpose: push ? .streamCheck : .streamPoll)
            for (user, answer) in zip(batch, answers) {
                if answer.full {
                    hub.reset(user: user)
                } else if !answer.found.isEmpty {
                    hub.post(.found(answer.found), to: user)
                }
            }
            guard !push else { continue }
            // No push: count changes and revocations are not told either.
            for (user, counts) in try await store.counts(recipientIds: batch) { hub.post(.counts(counts), to: user) }
            if let revocations {
                for (user, second) in try await revocations.revokedAt(users: batch) where second > 0 { hub.revoked(user: user, atSecond: second) }
            }
        }
    }
}
