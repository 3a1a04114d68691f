internal import Logging
internal import NIOCore
internal import NotificationsCore
internal import RedisClient

/// Listens to the sentinels' `+switch-master` announcements (a subscriber connection to each
/// sentinel in turn) and, on a failover of our master, forgets its address and rebuilds the
/// command pool's and the stream subscriber's connections, so writes go to the new master
/// without a restart. `-READONLY` replies and refused connections lead there too (the pool).
enum SentinelWatcher {
    static func make(
        sentinel: SentinelResolver, pool: RedisConnectionPool, streams: StreamHub, eventLoopGroup: any EventLoopGroup, logger: Logger
    ) -> RedisSubscriber {
        let sentinels = sentinel.sentinels
        var configuration = RedisConfiguration(host: sentinels[0].host, port: sentinels[0].port)
        configuration.operationTimeoutMilliseconds = pool.configuration.operationTimeoutMilliseconds
        let watcher = RedisSubscriber(
            configuration: configuration, eventLoopGroup: eventLoopGroup, logger: logger,
            endpoint: { attempt, _, _ in sentinels[attempt % sentinels.count] },
            onMessage: { _, payload in
                // "<master name> <old ip> <old port> <new ip> <new port>"
                let fields = String(decoding: payload, as: UTF8.self).split(separator: " ")
                guard fields.first.map(String.init) == sentinel.masterName else { return }
                logger.warning("Sentinel switched the Redis master", metadata: ["announcement": "\(String(decoding: payload, as: UTF8.self))"])
                sentinel.invalidate()
                pool.reconnectAll()
                streams.reconnectSubscriber()
            },
            onConnected: { _ in })
        watcher.subscribe("+switch-master")
        return watcher
    }
}
