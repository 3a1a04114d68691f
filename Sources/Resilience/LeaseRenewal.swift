/// Runs `body` while a child task calls `renew` every `interval`, so that work which may outlast
/// its lease (a distributed lock's, a fan-out batch's) keeps it as long as its owner is alive.
///
/// `renew` answers false once the lease is known to be gone; renewing then stops, and the body
/// goes on: only its owner's fenced finish can tell whether the work still counts. A frozen or
/// dead owner renews nothing, so its lease still expires and others may take the work over.
public func whileRenewing<T>(
    every interval: Duration,
    _ renew: @escaping @Sendable () async -> Bool,
    _ body: () async throws -> T
) async throws -> T {
    try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask {
            while true {
                try await Task.sleep(for: interval)
                guard await renew() else { return }
            }
        }
        // Ends the renewals whether the body returns or throws; the sleeping child then throws a
        // cancellation the group discards.
        defer { group.cancelAll() }
        return try await body()
    }
}
