public import Logging
public import NIOCore
internal import ServiceLifecycle
internal import Synchronization

/// Sharded pub/sub on a Redis Cluster: one `RedisSubscriber` (`SSUBSCRIBE`) per master, each
/// channel subscribed on the master that owns its slot.
///
/// When the map changes (a failover, a slot moved) the channels are moved to their new
/// masters, and the subscribers of nodes that are no longer masters are stopped. A node that
/// gives a channel up on its own (`sunsubscribe` after its slot left, or `MOVED`) makes the
/// map be read again, which moves the channel. Every master has a subscriber, with channels
/// or not, so near-cache tracking (`tracking`) runs on each. `onConnected` is true while every
/// master's subscriber is connected: only then can pushes be relied on for every user.
public final class ClusterSubscriber: ChannelSubscriber {
    private let cluster: RedisCluster
    private let eventLoopGroup: any EventLoopGroup
    private let logger: Logger
    private let onMessage: @Sendable (String, [UInt8]) -> Void
    private let onConnected: @Sendable (Bool) -> Void
    private let tracking: (@Sendable (RedisAddress) -> InvalidationTracking)?

    private struct State {
        /// Every channel wanted, and the master it is subscribed on (nil: no master known yet).
        var channels: [String: RedisAddress?] = [:]
        var members: [RedisAddress: RedisSubscriber] = [:]
        var connected: Set<RedisAddress> = []
        var reported: Bool?
    }

    private let state = Mutex(State())
    private let starts: AsyncStream<RedisSubscriber>
    private let start: AsyncStream<RedisSubscriber>.Continuation

    /// - Parameter tracking: the near cache's invalidation tracking for one master (nil: none).
    public init(
        cluster: RedisCluster, eventLoopGroup: any EventLoopGroup, logger: Logger,
        tracking: (@Sendable (RedisAddress) -> InvalidationTracking)? = nil,
        onMessage: @escaping @Sendable (_ channel: String, _ payload: [UInt8]) -> Void, onConnected: @escaping @Sendable (Bool) -> Void
    ) {
        self.cluster = cluster
        self.eventLoopGroup = eventLoopGroup
        self.logger = logger
        self.tracking = tracking
        self.onMessage = onMessage
        self.onConnected = onConnected
        (starts, start) = AsyncStream.makeStream()
        cluster.onMapChange { [weak self] map in self?.follow(map) }
    }

    public func subscribe(_ channel: String) {
        let owner = cluster.master(forSlot: HashSlot.of(channel))
        let subscriber = state.withLock { state -> RedisSubscriber? in
            guard state.channels[channel] == nil else { return nil }
            state.channels[channel] = .some(owner)
            guard let owner else { return nil }
            return member(for: owner, in: &state)
        }
        subscriber?.subscribe(channel)
    }

    public func unsubscribe(_ channel: String) {
        let subscriber = state.withLock { state -> RedisSubscriber? in
            guard let owner = state.channels.removeValue(forKey: channel) else { return nil }
            return owner.flatMap { state.members[$0] }
        }
        subscriber?.unsubscribe(channel)
    }

    /// The master `channel` is subscribed on now (nil: not subscribed, or no master known).
    public func master(of channel: String) -> RedisAddress? {
        state.withLock { $0.channels[channel] ?? nil }
    }

    public func disconnect() {
        for member in state.withLock({ Array($0.members.values) }) { member.disconnect() }
    }

    /// Runs every master's subscriber until graceful shutdown.
    public func run() async throws {
        if let map = cluster.map { follow(map) }
        await cancelWhenGracefulShutdown {
            await withDiscardingTaskGroup { group in
                for await member in self.starts {
                    group.addTask { try? await member.run() }
                }
            }
        }
    }

    /// Subscribers for the map's masters, each channel on its slot's master; the rest stopped.
    private func follow(_ map: ClusterSlotMap) {
        var moves: [(channel: String, from: RedisSubscriber?, to: RedisSubscriber)] = []
        let stopped = state.withLock { state -> [RedisSubscriber] in
            for master in map.masters { _ = member(for: master, in: &state) }
            for (channel, current) in state.channels {
                guard let owner = map.master(forSlot: HashSlot.of(channel)), owner != current else { continue }
                let from = current.flatMap { state.members[$0] }
                state.channels[channel] = .some(owner)
                moves.append((channel, from, member(for: owner, in: &state)))
            }
            let gone = state.members.keys.filter { !map.masters.contains($0) }
            let stopped = gone.compactMap { state.members.removeValue(forKey: $0) }
            state.connected.subtract(gone)
            return stopped
        }
        for move in moves {
            move.from?.unsubscribe(move.channel)
            move.to.subscribe(move.channel)
        }
        for member in stopped { member.stop() }
        if !moves.isEmpty { logger.info("Stream channels moved to their slots' new masters", metadata: ["channels": "\(moves.count)"]) }
        report()
    }

    /// The subscriber of `master`, made (and started) on first use.
    private func member(for master: RedisAddress, in state: inout State) -> RedisSubscriber {
        if let member = state.members[master] { return member }
        var configuration = cluster.configuration
        configuration.host = master.host
        configuration.port = master.port
        var logger = logger
        logger[metadataKey: "node"] = "\(master)"
        let member = RedisSubscriber(
            configuration: configuration, eventLoopGroup: eventLoopGroup, logger: logger, tracking: tracking?(master), sharded: true,
            onMessage: onMessage,
            onConnected: { [weak self] up in self?.connected(master, up) },
            onLost: { [weak self] channel in self?.lost(channel) })
        state.members[master] = member
        start.yield(member)
        return member
    }

    private func connected(_ master: RedisAddress, _ up: Bool) {
        state.withLock { state in
            guard state.members[master] != nil else { return }
            if up { state.connected.insert(master) } else { state.connected.remove(master) }
        }
        report()
    }

    /// A node gave a channel up: the map is read again, and `follow` moves the channel.
    private func lost(_ channel: String?) {
        logger.notice("A Redis node gave up a stream channel's slot; reading the cluster map", metadata: ["channel": "\(channel ?? "?")"])
        cluster.requestRefresh()
    }

    private func report() {
        let change = state.withLock { state -> Bool? in
            let up = !state.members.isEmpty && state.members.keys.allSatisfy(state.connected.contains)
            guard state.reported != up else { return nil }
            state.reported = up
            return up
        }
        if let change { onConnected(change) }
    }
}
