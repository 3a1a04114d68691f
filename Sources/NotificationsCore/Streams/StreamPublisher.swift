internal import RedisClient

/// Publishes stream messages on Redis pub/sub (sharded pub/sub on a cluster) after writes, through the gateway (a publish
/// Redis cannot take is not retried: every stream also checks MongoDB at least every 10 s, so
/// the notification still arrives, late).
public struct StreamPublisher: Sendable {
    let gateway: RedisGateway

    public init(gateway: RedisGateway) {
        self.gateway = gateway
    }

    /// Many messages in one round trip (a fan-out batch), as one script of PUBLISH calls.
    static let publishMany = RedisScript(
        """
        for i = 1, #ARGV, 2 do
          redis.call('PUBLISH', ARGV[i], ARGV[i + 1])
        end
        return #ARGV / 2
        """)

    public func publish(_ messages: [(user: String, message: StreamMessage)]) async {
        guard !messages.isEmpty else { return }
        let channels = messages.map { StreamMessage.channel($0.user) }
        let payloads = messages.map(\.message.payload)
        if gateway.isCluster {
            // Sharded pub/sub: each channel published on its slot's master (a script cannot name channels of other slots).
            _ = await gateway.callEach(.stream, keys: channels) { indices, redis in
                for index in indices { _ = try await redis.send(RedisCommand("SPUBLISH", [channels[index], payloads[index]])) }
            }
        } else if messages.count == 1 {
            _ = await gateway.call(.stream, key: channels[0]) { redis in
                try await redis.send(RedisCommand("PUBLISH", [channels[0], payloads[0]]))
            }
        } else {
            _ = await gateway.call(.stream, key: channels[0]) { redis in
                try await redis.evaluate(Self.publishMany, keys: [], arguments: zip(channels, payloads).flatMap { [$0, $1] })
            }
        }
    }

    public func countChanged(user: String) async {
        await publish([(user, .countChanged)])
    }
}
