internal import Synchronization

/// Waits at most `limit` for `work`, answering `fallback` if it is not done by then.
///
/// Unlike a task group, this does not wait for the work to finish after the deadline: the work
/// goes on in the background (for calls that cannot be cancelled, such as a blocked C call, or
/// that must not be, such as a PING pipelined with other commands).
public func firstOf<T: Sendable>(_ work: @escaping @Sendable () async -> T, orAfter limit: Duration, fallback: T) async -> T {
    let answered = Mutex(false)
    return await withCheckedContinuation { (continuation: CheckedContinuation<T, Never>) in
        let answer: @Sendable (T) -> Void = { value in
            let first = answered.withLock { done in
                defer { done = true }
                return !done
            }
            if first { continuation.resume(returning: value) }
        }
        Task { answer(await work()) }
        Task {
            try? await Task.sleep(for: limit)
            answer(fallback)
        }
    }
}
