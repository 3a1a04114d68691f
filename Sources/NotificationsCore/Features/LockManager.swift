public import Logging
internal import RedisClient

/// Why a section could not run under its lock.
public enum LockError: Error, Sendable, Equatable {
    /// Another holder kept the lock for all of `LOCK_WAIT_MS` (409 `lock_busy`, `Retry-After: 1`).
    case busy
    /// Redis unusable and `REDIS_FAIL_OPEN=false` (503 `lock_unavailable`).
    case unavailable(retryAfterSeconds: Int)
}

/// Distributed locks in Redis, and their rule for Redis failures.
///
/// Acquire is `SET key token NX PX ttl`, retried with jitter for up to `wait`; the lease is
/// extended (compare-and-`PEXPIRE`) while the work runs and released by compare-and-`DEL`,
/// so a holder never deletes a lock that expired and was taken by someone else. Redis
/// unusable: proceed without the lock (fail-open, counted and logged) or `LockError.unavailable`.
public struct LockManager: Sendable {
    let gateway: RedisGateway
    let ttl: Duration
    let wait: Duration
    let logger: Logger

    public init(gateway: RedisGateway, ttl: Duration, wait: Duration, logger: Logger) {
        self.gateway = gateway
        self.ttl = ttl
        self.wait = wait
        self.logger = logger
    }

    static let release = RedisScript(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end")
    static let extend = RedisScript(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end")

    /// Runs `body` holding lock `name` (or without it, when Redis is down and fail-open).
    public func withLock<T: Sendable>(_ name: String, _ body: @Sendable () async throws -> T) async throws -> T {
        let key = "lock:\(name)"
        let token = Self.newToken()
        switch await acquire(key: key, token: token) {
        case .acquired:
            return try await hold(key: key, token: token, body)
        case .busy:
            throw LockError.busy
        case .redisUnusable:
            guard gateway.failOpen else { throw LockError.unavailable(retryAfterSeconds: gateway.retryAfterSeconds) }
            logger.warning("Proceeding without lock: Redis unusable (fail-open)", metadata: ["lock": "\(name)"])
            return try await body()
        }
    }

    private enum Acquisition { case acquired, busy, redisUnusable }

    private func acquire(key: String, token: String) async -> Acquisition {
        let deadline = ContinuousClock.now + wait
        let ttlMilliseconds = ttl.milliseconds
        while true {
            let reply = await gateway.call(.lock) { pool in
                try await pool.send(.set(key, Array(token.utf8), onlyIfAbsent: true, ttlMilliseconds: ttlMilliseconds))
            }
            guard let reply else { return .redisUnusable }
            if reply == .simpleString("OK") { return .acquired }
            let pause = Duration.milliseconds(Int64.random(in: 20...60))
            guard ContinuousClock.now + pause < deadline else { return .busy }
            try? await Task.sleep(for: pause)
        }
    }

    /// Runs the work while a child task extends the lease every ttl/3; releases afterwards.
    private func hold<T: Sendable>(key: String, token: String, _ body: @Sendable () async throws -> T) async throws -> T {
        let result: Result<T, any Error> = await withTaskGroup(of: Void.self) { group in
            group.addTask { [gateway, ttl] in
                while !Task.isCancelled {
                    try? await Task.sleep(for: ttl / 3)
                    if Task.isCancelled { return }
                    _ = await gateway.call(.lock, essential: true) { pool in
                        try await pool.evaluate(Self.extend, keys: [key], arguments: [token, String(ttl.milliseconds)])
                    }
                }
            }
            let outcome: Result<T, any Error>
            do {
                outcome = .success(try await body())
            } catch {
                outcome = .failure(error)
            }
            group.cancelAll()
            return outcome
        }
        _ = await gateway.call(.lock, essential: true) { pool in try await pool.evaluate(Self.release, keys: [key], arguments: [token]) }
        return try result.get()
    }

    private static func newToken() -> String {
        (0..<4).map { _ in String(UInt64.random(in: 0...UInt64.max), radix: 36) }.joined(separator: "-")
    }
}
