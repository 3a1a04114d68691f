internal import RedisClient

/// Publishes stream messages on Redis pub/sub after writes, through the gateway (a publish
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
        let arguments = messages.flatMap { [StreamMessage.channel($0.user), $0.message.payload] }
        if messages.count == 1 {
            _ = await gateway.call(.stream) { pool in
                try await pool.send(RedisCommand("PUBLISH", arguments))
            }
        } else {
            _ = await gateway.call(.stream) { pool in
                try await pool.evaluate(Self.publishMany, keys: [], arguments: arguments)
            }
        }
    }

    public func countChanged(user: String) async {
        await publish([(user, .countChanged)])
    }
}
