/// One Redis command as its argument vector; encoded to RESP by hiredis's formatter.
public struct RedisCommand: Sendable, Hashable {
    public var arguments: [[UInt8]]

    public init(_ arguments: [[UInt8]]) {
        self.arguments = arguments
    }

    public init(_ name: String, _ arguments: [String] = []) {
        self.arguments = [Array(name.utf8)] + arguments.map { Array($0.utf8) }
    }

    public var name: String { arguments.first.map { String(decoding: $0, as: UTF8.self) } ?? "" }

    /// Where the keys (and shard channels) are among `arguments`, for the commands the service
    /// sends (named in capitals, as it sends them): a cluster's slot check. nil for a command
    /// this list does not know (it is sent unchecked).
    public var keyIndices: Range<Int>? {
        switch name {
        case "GET", "SET", "PTTL", "PEXPIRE", "EXPIRE", "INCR", "SPUBLISH", "PUBLISH": 1..<min(2, arguments.count)
        case "DEL", "EXISTS": 1..<arguments.count
        case "EVAL", "EVALSHA":
            if arguments.count > 2, let count = Int(String(decoding: arguments[2], as: UTF8.self)), count >= 0, arguments.count >= 3 + count {
                3..<(3 + count)
            } else {
                nil
            }
        case "PING", "ECHO", "CLUSTER", "WAIT", "SCRIPT", "TIME": 0..<0
        default: nil
        }
    }
}

extension RedisCommand {
    public static let ping = RedisCommand("PING")
    public static func get(_ key: String) -> RedisCommand { RedisCommand("GET", [key]) }
    public static func del(_ keys: [String]) -> RedisCommand { RedisCommand("DEL", keys) }
    public static func incr(_ key: String) -> RedisCommand { RedisCommand("INCR", [key]) }

    /// `SET key value [NX] [PX ttl]`.
    public static func set(_ key: String, _ value: [UInt8], onlyIfAbsent: Bool = false, ttlMilliseconds: Int64? = nil) -> RedisCommand {
        var arguments: [[UInt8]] = [Array("SET".utf8), Array(key.utf8), value]
        if onlyIfAbsent { arguments.append(Array("NX".utf8)) }
        if let ttlMilliseconds { arguments += [Array("PX".utf8), Array(String(ttlMilliseconds).utf8)] }
        return RedisCommand(arguments)
    }
}
