/// Where and how to reach Redis: parsed from `REDIS_URL` (`redis://[[user]:password@]host[:port][/db]`).
public struct RedisConfiguration: Sendable, Equatable {
    public var host: String
    public var port: Int
    public var username: String?
    public var password: String?
    public var database: Int
    /// Connections kept open; commands are pipelined on each, so a few are enough.
    public var connectionCount: Int
    /// The per-call deadline (`REDIS_OPERATION_TIMEOUT_MS`), also used for connecting.
    public var operationTimeoutMilliseconds: Int64

    public init(
        host: String = "localhost", port: Int = 6379, username: String? = nil, password: String? = nil,
        database: Int = 0, connectionCount: Int = 4, operationTimeoutMilliseconds: Int64 = 5000
    ) {
        self.host = host
        self.port = port
        self.username = username
        self.password = password
        self.database = database
        self.connectionCount = connectionCount
        self.operationTimeoutMilliseconds = operationTimeoutMilliseconds
    }

    public struct InvalidURL: Error, CustomStringConvertible {
        public var description: String
    }

    /// Parses a `redis://` URL. The error names what is wrong but never echoes the password.
    public init(url: String, operationTimeoutMilliseconds: Int64 = 5000) throws {
        guard url.hasPrefix("redis://") else { throw InvalidURL(description: "must start with redis://") }
        var rest = Substring(url.dropFirst("redis://".count))
        var username: String?
        var password: String?
        if let at = rest.lastIndex(of: "@") {
            let credentials = rest[..<at]
            rest = rest[rest.index(after: at)...]
            if let colon = credentials.firstIndex(of: ":") {
                let user = credentials[..<colon]
                username = user.isEmpty ? nil : percentDecoded(user)
                password = percentDecoded(credentials[credentials.index(after: colon)...])
            } else {
                password = percentDecoded(credentials)
            }
        }
        var database = 0
        if let slash = rest.firstIndex(of: "/") {
            let path = rest[rest.index(after: slash)...].prefix { $0 != "?" }
            rest = rest[..<slash]
            if !path.isEmpty {
                guard let db = Int(path), db >= 0 else { throw InvalidURL(description: "database index must be a number") }
                database = db
            }
        }
        var host = String(rest)
        var port = 6379
        if let colon = rest.lastIndex(of: ":"), !rest.hasSuffix("]") {
            host = String(rest[..<colon])
            guard let parsed = Int(rest[rest.index(after: colon)...]), (1...65535).contains(parsed) else {
                throw InvalidURL(description: "port must be 1-65535")
            }
            port = parsed
        }
        host = host.trimmingBrackets()
        guard !host.isEmpty else { throw InvalidURL(description: "host is missing") }
        self.init(
            host: host, port: port, username: username, password: password, database: database,
            operationTimeoutMilliseconds: operationTimeoutMilliseconds
        )
    }
}

private func percentDecoded(_ text: Substring) -> String {
    var bytes: [UInt8] = []
    var iterator = Array(text.utf8).makeIterator()
    while let byte = iterator.next() {
        if byte == UInt8(ascii: "%"), let high = iterator.next(), let low = iterator.next(),
            let value = UInt8(String(decoding: [high, low], as: UTF8.self), radix: 16)
        {
            bytes.append(value)
        } else {
            bytes.append(byte)
        }
    }
    return String(decoding: bytes, as: UTF8.self)
}

extension String {
    fileprivate func trimmingBrackets() -> String {
        hasPrefix("[") && hasSuffix("]") ? String(dropFirst().dropLast()) : self
    }
}
