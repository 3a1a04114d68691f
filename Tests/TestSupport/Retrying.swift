/// Runs `attempt` until `done` accepts its result or `timeout` passes; returns the last result.
public func retrying<T>(
    for timeout: Duration, every pause: Duration = .milliseconds(250), _ attempt: () async throws -> T, until done: (T) -> Bool
) async throws -> T {
    let deadline = ContinuousClock.now + timeout
    var result = try await attempt()
    while !done(result) && ContinuousClock.now < deadline {
        try await Task.sleep(for: pause)
        result = try await attempt()
    }
    return result
}
