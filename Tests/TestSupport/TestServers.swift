public import Foundation
import NIOCore
import NIOPosix

/// Real servers for integration tests, started as child processes so a test can kill,
/// pause (SIGSTOP) or restart them. Never mocks.
public enum TestServers {
    /// The repository root (this file is Tests/TestSupport/TestServers.swift).
    public static let repositoryRoot: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// A TCP port nobody listens on right now (bound to port 0, then released).
    public static func freePort() throws -> Int {
        let channel = try ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .bind(host: "127.0.0.1", port: 0).wait()
        let port = channel.localAddress!.port!
        try channel.close().wait()
        return port
    }

    /// A free port whose cluster bus port (+10000) is free and valid too (a cluster node needs both).
    public static func freeClusterPort() throws -> Int {
        for _ in 0..<100 {
            let port = try freePort()
            guard port + 10000 <= 65535 else { continue }
            if let bus = try? ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(host: "127.0.0.1", port: port + 10000).wait() {
                try bus.close().wait()
                return port
            }
        }
        throw TestServerError.notReady("no free port pair for a cluster node")
    }

    /// Waits until something accepts TCP connections on the port.
    public static func waitForPort(_ port: Int, timeout: Duration = .seconds(15)) async throws {
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        while clock.now < deadline {
            if let channel = try? await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .connect(host: "127.0.0.1", port: port).get()
            {
                try? await channel.close()
                return
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw TestServerError.notReady("nothing listens on port \(port) after \(timeout)")
    }

    /// A scratch directory on tmpfs when there is one (the MongoDB-wire server writes twice as fast there).
    public static func scratchDirectory(_ name: String) throws -> URL {
        let base = FileManager.default.fileExists(atPath: "/dev/shm") ? "/dev/shm" : NSTemporaryDirectory()
        let url = URL(fileURLWithPath: base).appendingPathComponent("notifications-tests-\(getpid())-\(name)-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }
}

public enum TestServerError: Error {
    case notReady(String)
    case missing(String)
}

/// A child process with signal helpers. Every one started is also killed when the test
/// process exits, so no server outlives the test run.
public final class ChildServer: @unchecked Sendable {
    public let port: Int
    private let launch: () throws -> Process
    private var process: Process

    init(port: Int, launch: @escaping () throws -> Process) throws {
        self.port = port
        self.launch = launch
        self.process = try launch()
        ChildProcesses.track(process.processIdentifier)
    }

    /// Stops the server for good (SIGKILL after SIGCONT, so a paused one dies too).
    public func stop() {
        if process.isRunning { kill() }
    }

    public var pid: Int32 { process.processIdentifier }
    public var isRunning: Bool { process.isRunning }
    public func pause() { Foundation.kill(pid, SIGSTOP) }
    public func resume() { Foundation.kill(pid, SIGCONT) }

    /// SIGKILL, and waits for the process to be gone.
    public func kill() {
        Foundation.kill(pid, SIGCONT)
        Foundation.kill(pid, SIGKILL)
        process.waitUntilExit()
    }

    /// Starts the same server again on the same port (after `kill`).
    public func restart() async throws {
        process = try launch()
        ChildProcesses.track(process.processIdentifier)
        try await TestServers.waitForPort(port)
    }

    deinit {
        if process.isRunning {
            Foundation.kill(process.processIdentifier, SIGCONT)
            process.terminate()
        }
    }
}

extension TestServers {
    /// Starts `executable arguments` (quietly) on `port` as a child server and waits until it listens.
    private static func start(port: Int, _ executable: String, _ arguments: [String]) async throws -> ChildServer {
        let server = try ChildServer(port: port) {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: executable)
            process.arguments = arguments
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
            return process
        }
        try await waitForPort(port)
        return server
    }

    /// `redis-server` on a free port with persistence off (and any extra arguments, e.g. `--replicaof`),
    /// in a scratch folder of its own: a replica's sync or a SHUTDOWN still writes `dump.rdb`, never
    /// into the checkout.
    public static func startRedis(_ extra: [String] = []) async throws -> ChildServer {
        try await startRedis(port: try freePort(), extra)
    }

    static func startRedis(port: Int, _ extra: [String]) async throws -> ChildServer {
        let dir = try scratchDirectory("redis").path
        return try await start(
            port: port, "/usr/bin/env",
            ["redis-server", "--port", "\(port)", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir] + extra)
    }

    /// A Redis Sentinel watching the master on `masterPort` as `name` (quorum 2, down after 1 s).
    public static func startSentinel(masterPort: Int, name: String) async throws -> ChildServer {
        let port = try freePort()
        let config = try scratchDirectory("sentinel").appendingPathComponent("sentinel.conf")
        let lines = [
            "port \(port)", "bind 127.0.0.1", "sentinel monitor \(name) 127.0.0.1 \(masterPort) 2",
            "sentinel down-after-milliseconds \(name) 1000", "sentinel failover-timeout \(name) 5000", "sentinel parallel-syncs \(name) 1",
        ]
        try lines.joined(separator: "\n").write(to: config, atomically: true, encoding: .utf8)
        return try await start(port: port, "/usr/bin/env", ["redis-server", config.path, "--sentinel", "--dir", config.deletingLastPathComponent().path])
    }

    /// The MongoDB-wire dev server (`scripts/mongo-wire-server.py` in the project's `.venv`), with a fresh data folder.
    public static func startMongo() async throws -> ChildServer {
        let port = try freePort()
        let python = repositoryRoot.appendingPathComponent(".venv/bin/python").path
        guard FileManager.default.isExecutableFile(atPath: python) else {
            throw TestServerError.missing("\(python): run scripts/bootstrap first")
        }
        let script = repositoryRoot.appendingPathComponent("scripts/mongo-wire-server.py").path
        let data = try scratchDirectory("mongo").appendingPathComponent("db").path
        return try await start(port: port, python, [script, data, "\(port)", "--exit-with-parent"])
    }
}

/// Pids of every child server, killed at exit even when a test fails or forgets to stop one.
enum ChildProcesses {
    private static let lock = NSLock()
    nonisolated(unsafe) private static var pids: Set<Int32> = []
    private static let installExitHandler: Void = {
        atexit {
            ChildProcesses.lock.lock()
            let all = ChildProcesses.pids
            ChildProcesses.lock.unlock()
            for pid in all {
                Foundation.kill(pid, SIGCONT)
                Foundation.kill(pid, SIGKILL)
            }
        }
    }()

    static func track(_ pid: Int32) {
        _ = installExitHandler
        lock.lock()
        pids.insert(pid)
        lock.unlock()
    }
}
