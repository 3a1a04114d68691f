/// Which master serves each of a Redis Cluster's 16384 slots, and the replicas known with it,
/// as `CLUSTER SHARDS` (Redis 7) or `CLUSTER SLOTS` (older) reports them.
public struct ClusterSlotMap: Sendable, Equatable {
    /// The masters that serve at least one slot, in the order first seen.
    public private(set) var masters: [RedisAddress]
    /// Every node named (masters and replicas): where to ask for the map next time.
    public private(set) var nodes: [RedisAddress]
    /// For each slot, an index into `masters` (`-1`: no master serves it).
    private var owners: [Int16]

    public init() {
        masters = []
        nodes = []
        owners = Array(repeating: -1, count: HashSlot.count)
    }

    public func master(forSlot slot: Int) -> RedisAddress? {
        let owner = owners[slot]
        return owner < 0 ? nil : masters[Int(owner)]
    }

    /// Slots with no master (the cluster is not fully covered).
    public var uncoveredSlots: Int { owners.reduce(0) { $0 + ($1 < 0 ? 1 : 0) } }

    /// The slots `address` serves, as ranges (for logs and the admin view).
    public func slots(of address: RedisAddress) -> [ClosedRange<Int>] {
        guard let index = masters.firstIndex(of: address) else { return [] }
        var ranges: [ClosedRange<Int>] = []
        var start: Int?
        for slot in 0...HashSlot.count {
            let mine = slot < HashSlot.count && owners[slot] == Int16(index)
            if mine, start == nil { start = slot }
            if !mine, let first = start {
                ranges.append(first...(slot - 1))
                start = nil
            }
        }
        return ranges
    }

    /// After a `MOVED`: `slot` is served by `address` now (until the next full read says more).
    public mutating func assign(slot: Int, to address: RedisAddress) {
        owners[slot] = Int16(index(ofMaster: address))
        if !nodes.contains(address) { nodes.append(address) }
    }

    private mutating func index(ofMaster address: RedisAddress) -> Int {
        if let index = masters.firstIndex(of: address) { return index }
        masters.append(address)
        return masters.count - 1
    }

    private mutating func assign(_ range: ClosedRange<Int>, to address: RedisAddress) throws(RedisError) {
        guard range.lowerBound >= 0, range.upperBound < HashSlot.count else { throw .protocolError("slot range \(range) out of bounds") }
        let index = Int16(index(ofMaster: address))
        for slot in range { owners[slot] = index }
    }

    private mutating func note(_ address: RedisAddress) {
        if !nodes.contains(address) { nodes.append(address) }
    }

    /// Reads a `CLUSTER SHARDS` reply (RESP2: each shard and each node is a flat key/value list).
    /// - Parameter askedAt: the node that answered; stands in for a node whose endpoint is unknown (`?`).
    public init(shards reply: RESPValue, askedAt: RedisAddress) throws(RedisError) {
        self.init()
        guard let shards = reply.array else { throw .protocolError("CLUSTER SHARDS answered \(reply)") }
        for shard in shards {
            let fields = Self.fields(shard)
            guard let bounds = fields["slots"]?.array?.compactMap(\.integer), bounds.count % 2 == 0,
                  let nodeList = fields["nodes"]?.array
            else { throw .protocolError("CLUSTER SHARDS shard without slots or nodes") }
            var master: RedisAddress?
            for node in nodeList {
                let node = Self.fields(node)
                guard let port = node["port"]?.integer ?? node["tls-port"]?.integer else { continue }
                let endpoint = node["endpoint"]?.string ?? node["ip"]?.string ?? "?"
                let host = endpoint == "?" || endpoint.isEmpty ? askedAt.host : endpoint
                let address = RedisAddress(host: host, port: Int(port))
                note(address)
                if node["role"]?.string == "master" { master = address }
            }
            guard let master else { continue }
            for pair in stride(from: 0, to: bounds.count, by: 2) {
                try assign(Int(bounds[pair])...Int(bounds[pair + 1]), to: master)
            }
        }
    }

    /// Reads a `CLUSTER SLOTS` reply: `[start, end, [host, port, id], replicas...]` per range.
    public init(slots reply: RESPValue, askedAt: RedisAddress) throws(RedisError) {
        self.init()
        guard let ranges = reply.array else { throw .protocolError("CLUSTER SLOTS answered \(reply)") }
        for range in ranges {
            guard let parts = range.array, parts.count >= 3, let start = parts[0].integer, let end = parts[1].integer else {
                throw .protocolError("CLUSTER SLOTS range \(range)")
            }
            let addresses = parts.dropFirst(2).compactMap { node -> RedisAddress? in
                guard let fields = node.array, fields.count >= 2, let port = fields[1].integer else { return nil }
                let host = fields[0].string.flatMap { $0.isEmpty || $0 == "?" ? nil : $0 } ?? askedAt.host
                return RedisAddress(host: host, port: Int(port))
            }
            guard let master = addresses.first else { continue }
            addresses.forEach { note($0) }
            try assign(Int(start)...Int(end), to: master)
        }
    }

    private static func fields(_ value: RESPValue) -> [String: RESPValue] {
        guard let list = value.array else { return [:] }
        var fields: [String: RESPValue] = [:]
        for pair in stride(from: 0, to: list.count - 1, by: 2) {
            if let name = list[pair].string { fields[name] = list[pair + 1] }
        }
        return fields
    }
}
