internal import ServiceLifecycle

/// The loop of a background service: runs `pass`, then waits `interval` (times a random
/// factor in `spread`, so instances started together do not run in step), until graceful
/// shutdown or cancellation.
func repeatUntilShutdown(every interval: Duration, spread: ClosedRange<Double> = 1...1, _ pass: @escaping @Sendable () async -> Void) async {
    await cancelWhenGracefulShutdown {
        while !Task.isCancelled {
            await pass()
            try? await Task.sleep(for: interval * Double.random(in: spread))
        }
    }
}
