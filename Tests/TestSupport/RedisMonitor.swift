import Foundation
import Synchronization

/// Redis's `MONITOR` (through `redis-cli`): the commands clients sent, as Redis received them.
/// Commands a script ran inside Redis are left out, so the count is the round trips made.
public final class RedisMonitor: Sendable {
    private let process: Process
    private let received = Received()

    private final class Received: Sendable {
        let lines = Mutex<[String]>([])
    }

    /// Starts monitoring the Redis on `port`; returns once Redis has acknowledged (`OK`).
    public init(port: Int) async throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["redis-cli", "-p", "\(port)", "monitor"]
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = FileHandle.nullDevice
        try process.run()
        self.process = process
        let received = self.received
        // A plain thread: reading a pipe blocks, which the concurrency pool must never do.
        // It ends when `stop()` closes the pipe's other end.
        let reader = Thread {
            var pending = Data()
            while case let chunk = pipe.fileHandleForReading.availableData, !chunk.isEmpty {
                pending.append(chunk)
                while let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                    let line = String(decoding: pending[pending.startIndex..<newline], as: UTF8.self)
                    pending.removeSubrange(pending.startIndex...newline)
                    received.lines.withLock { $0.append(line) }
                }
            }
        }
        reader.start()
        try await waitFor { $0.contains("OK") }
    }

    private func waitFor(_ done: ([String]) -> Bool) async throws {
        let deadline = ContinuousClock.now + .seconds(5)
        while !done(received.lines.withLock { $0 }) {
            guard ContinuousClock.now < deadline else { throw MonitorError.silent }
            try await Task.sleep(for: .milliseconds(10))
        }
    }

    enum MonitorError: Error { case silent }

    /// The client commands seen so far, by lowercased name; waits until `marker` (sent by the
    /// caller with `ECHO` after its requests) has arrived, so nothing before it is missed.
    public func commands(through marker: String) async throws -> [String: Int] {
        try await waitFor { $0.contains { $0.contains("\"\(marker)\"") } }
        var counts: [String: Int] = [:]
        for line in received.lines.withLock({ $0 }) {
            // `1700000000.000000 [0 127.0.0.1:5000] "evalsha" ...`; script commands show `[0 lua]`.
            guard let open = line.firstIndex(of: "["), let close = line.firstIndex(of: "]"), !line[open..<close].hasSuffix("lua"),
                  let name = line[close...].split(separator: "\"").dropFirst().first else { continue }
            counts[name.lowercased(), default: 0] += 1
        }
        return counts
    }

    /// Ends `redis-cli`; Foundation reaps it. (`waitUntilExit` would spin a run loop on a
    /// concurrency-pool thread, where it was seen never to return.)
    public func stop() {
        process.terminate()
    }
}
