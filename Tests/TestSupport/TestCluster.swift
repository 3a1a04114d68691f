import Foundation

/// A Redis Cluster made from Debian's `redis-server` for one test: `masters` masters with
/// one replica each on loopback, a short `cluster-node-timeout` (failovers take seconds),
/// and `cluster-require-full-coverage no`, so a master that fails stops only its own slots.
public final class TestCluster: Sendable {
    public let nodes: [ChildServer]

    init(nodes: [ChildServer]) {
        self.nodes = nodes
    }

    /// `127.0.0.1:port` of every node: `REDIS_CLUSTER_NODES`.
    public var seeds: String { nodes.map { "127.0.0.1:\($0.port)" }.joined(separator: ",") }

    public func node(port: Int) -> ChildServer? { nodes.first { $0.port == port } }

    public func stop() {
        for node in nodes { node.stop() }
    }

    /// Runs `redis-cli` against `port` and returns its output (`-e`: an error reply fails the run).
    @discardableResult
    public static func cli(_ port: Int, _ arguments: [String]) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["redis-cli", "-p", "\(port)", "-e"] + arguments
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let text = String(decoding: data, as: UTF8.self)
        guard process.terminationStatus == 0 else { throw TestServerError.notReady("redis-cli \(arguments.joined(separator: " ")): \(text)") }
        return text
    }

    /// The masters now, with the slot ranges each serves, as node `port` sees them (`CLUSTER NODES`).
    public func masters(askingPort port: Int? = nil) throws -> [(port: Int, slots: [ClosedRange<Int>])] {
        let asked = port ?? nodes.first { $0.isRunning }!.port
        var masters: [(port: Int, slots: [ClosedRange<Int>])] = []
        for line in try Self.cli(asked, ["CLUSTER", "NODES"]).split(separator: "\n") {
            // <id> <ip:port@cport> <flags> <master> <ping> <pong> <epoch> <link> <slot>...
            let fields = line.split(separator: " ")
            guard fields.count >= 8, fields[2].split(separator: ",").contains("master"), !fields[2].contains("fail"),
                  let address = fields[1].split(separator: "@").first, let port = address.split(separator: ":").last.flatMap({ Int($0) })
            else { continue }
            let slots = fields.dropFirst(8).compactMap { field -> ClosedRange<Int>? in
                guard !field.hasPrefix("[") else { return nil }
                let bounds = field.split(separator: "-").compactMap { Int($0) }
                return bounds.count == 2 ? bounds[0]...bounds[1] : bounds.first.map { $0...$0 }
            }
            if !slots.isEmpty { masters.append((port, slots)) }
        }
        return masters.sorted { $0.slots[0].lowerBound < $1.slots[0].lowerBound }
    }

    /// The replica of the master on `port`.
    public func replica(of port: Int) throws -> Int? {
        let lines = try Self.cli(nodes.first { $0.isRunning }!.port, ["CLUSTER", "NODES"]).split(separator: "\n")
        let id = lines.first { $0.split(separator: " ").count > 1 && $0.split(separator: " ")[1].hasPrefix("127.0.0.1:\(port)@") }?.split(separator: " ").first
        guard let id else { return nil }
        let replica = lines.first { $0.split(separator: " ").count > 3 && $0.split(separator: " ")[3] == id }
        return replica?.split(separator: " ")[1].split(separator: "@").first?.split(separator: ":").last.flatMap { Int($0) }
    }
}

extension TestServers {
    /// Starts `2 × masters` cluster-enabled `redis-server`s and joins them with `redis-cli --cluster create`.
    public static func startRedisCluster(masters: Int = 3, nodeTimeoutMilliseconds: Int = 1000) async throws -> TestCluster {
        var nodes: [ChildServer] = []
        for _ in 0..<(2 * masters) {
            nodes.append(try await startRedis(port: try freeClusterPort(), [
                "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "\(nodeTimeoutMilliseconds)",
                "--cluster-require-full-coverage", "no", "--cluster-replica-validity-factor", "0",
            ]))
        }
        let cluster = TestCluster(nodes: nodes)
        do {
            try TestCluster.cli(nodes[0].port, ["--cluster", "create"] + nodes.map { "127.0.0.1:\($0.port)" } + ["--cluster-replicas", "1", "--cluster-yes"])
            try await cluster.waitUntilHealthy()
        } catch {
            cluster.stop()
            throw error
        }
        return cluster
    }
}

extension TestCluster {
    /// Until every running node says `cluster_state:ok` and sees `masters` masters with a replica each.
    public func waitUntilHealthy(timeout: Duration = .seconds(30)) async throws {
        let deadline = ContinuousClock.now + timeout
        var last = ""
        while ContinuousClock.now < deadline {
            let running = nodes.filter(\.isRunning)
            let states = running.map { (try? Self.cli($0.port, ["CLUSTER", "INFO"])) ?? "" }
            let roles = running.map { (try? Self.cli($0.port, ["ROLE"])) ?? "" }
            let replicasInSync = roles.filter { $0.hasPrefix("slave") }.allSatisfy { $0.contains("connected") }
            if states.allSatisfy({ $0.contains("cluster_state:ok") }), replicasInSync, roles.filter({ $0.hasPrefix("master") }).count * 2 == running.count {
                return
            }
            last = states.first { !$0.contains("cluster_state:ok") } ?? roles.joined(separator: " | ")
            try await Task.sleep(for: .milliseconds(200))
        }
        throw TestServerError.notReady("cluster not healthy after \(timeout): \(last.prefix(300))")
    }
}
