public import Logging
internal import RedisClient
internal import Resilience
internal import Synchronization

/// Why a section could not run under its lock.
public enum LockError: Error, Sendable, Equatable {
    /// Another holder kept the lock for all of `LOCK_WAIT_MS` (409 `lock_busy`, `Retry-After: 1`).
    case busy
    /// Redis unusable and `REDIS_FAIL_OPEN=false` (503 `lock_unavailable`).
    case unavailable(retryAfterSeconds: Int)
}

/// What the work under a lock knows about it.
public final class LockLease: Sendable {
    /// Grows with every acquisition of the same lock (nil: running without the lock, fail-open).
    /// A store that remembers the highest token it saw can refuse a late writer whose lease ran out.
    public let fencingToken: Int64?
    private let lostFlag = Atomic<Bool>(false)

    init(fencingToken: Int64?) {
        self.fencingToken = fencingToken
    }

    /// True once an extension found the lock gone or held by someone else: the work is no
    /// longer exclusive (it was paused past the lease, or Redis lost the key).
    public var isLost: Bool { lostFlag.load(ordering: .relaxed) }
    func markLost() { lostFlag.store(true, ordering: .relaxed) }
}

/// Distributed locks in Redis, and their rule for Redis failures.
///
/// Acquire is one script, `SET key token NX PX ttl` then `INCR` of the lock's fencing counter,
/// retried with jitter for up to `wait`; the lease is extended (compare-and-`PEXPIRE`) while
/// the work runs and released by compare-and-`DEL`, so a holder never deletes a lock that
/// expired and was taken by someone else. An extension that finds the lock gone marks the
/// lease lost and logs it. An acquisition whose outcome is unknown (sent, no reply: Redis may
/// have applied it) is released with its token in the background once Redis answers, so it
/// cannot leave a ghost lock for `LOCK_TTL_MS`. Redis unusable: proceed without the lock
/// (fail-open, counted and logged) or `LockError.unavailable`.
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

    /// Fencing counters outlive any lease by far; an idle lock's counter may expire and restart.
    static let fenceTTLSeconds = 7 * 86_400

    static let acquire = RedisScript(
        """
        if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
          local fence = redis.call('INCR', KEYS[2])
          redis.call('EXPIRE', KEYS[2], ARGV[3])
          return fence
        end
        return 0
        """)
    static let release = RedisScript(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end")
    static let extend = RedisScript(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end")

    /// Runs `body` holding lock `name` (or without it, when Redis is down and fail-open).
    public func withLock<T: Sendable>(_ name: String, _ body: @Sendable (LockLease) async throws -> T) async throws -> T {
        let key = Self.key(name)
        let token = Self.newToken()
        switch await acquire(key: key, token: token) {
        case .acquired(let fence):
            return try await hold(key: key, token: token, lease: LockLease(fencingToken: fence), body)
        case .busy:
            throw LockError.busy
        case .redisUnusable:
            guard gateway.failOpen else { throw LockError.unavailable(retryAfterSeconds: gateway.retryAfterSeconds) }
            logger.warning("Proceeding without lock: Redis unusable (fail-open)", metadata: ["lock": "\(name)"])
            return try await body(LockLease(fencingToken: nil))
        }
    }

    private enum Acquisition { case acquired(fence: Int64), busy, redisUnusable }

    private func acquire(key: String, token: String) async -> Acquisition {
        let deadline = ContinuousClock.now + wait
        let arguments = [token, String(ttl.milliseconds), String(Self.fenceTTLSeconds)]
        while true {
            let outcome = await gateway.attempt(.lock, key: key) { redis in
                try await redis.evaluate(Self.acquire, keys: [key, key + ":fence"], arguments: arguments)
            }
            switch outcome {
            case .reply(let reply):
                if case .integer(let fence) = reply, fence > 0 { return .acquired(fence: fence) }
            case .notAttempted:
                return .redisUnusable
            case .failed:
                releaseEventually(key: key, token: token)
                return .redisUnusable
            }
            let pause = Duration.milliseconds(Int64.random(in: 20...60))
            guard ContinuousClock.now + pause < deadline else { return .busy }
            try? await Task.sleep(for: pause)
        }
    }

    /// Runs the work while the lease is extended every ttl/3; releases afterwards.
    private func hold<T: Sendable>(key: String, token: String, lease: LockLease, _ body: @Sendable (LockLease) async throws -> T) async throws -> T {
        let result: Result<T, any Error>
        do {
            result = .success(try await whileRenewing(every: ttl / 3, { [gateway, ttl, logger] in
                let reply = await gateway.call(.lock, key: key, essential: true) { redis in
                    try await redis.evaluate(Self.extend, keys: [key], arguments: [token, String(ttl.milliseconds)])
                }
                // No answer (Redis down, a timeout) is tried again at the next tick.
                guard reply == .integer(0) else { return true }
                lease.markLost()
                logger.error("Lock lease lost: the lock expired or was taken while its work ran", metadata: ["lock": "\(key)"])
                return false
            }) {
                try await body(lease)
            })
        } catch {
            result = .failure(error)
        }
        if await gateway.call(.lock, key: key, essential: true, { redis in try await redis.evaluate(Self.release, keys: [key], arguments: [token]) }) == nil {
            releaseEventually(key: key, token: token)
        }
        return try result.get()
    }

    /// Compare-and-deletes our token once Redis answers, trying until the lease would have
    /// expired anyway. Harmless when the lock is not ours (the compare fails).
    private func releaseEventually(key: String, token: String) {
        let until = ContinuousClock.now + ttl
        Task.detached { [gateway, logger] in
            while ContinuousClock.now < until {
                let reply = await gateway.call(.lock, key: key, essential: true) { redis in
                    try await redis.evaluate(Self.release, keys: [key], arguments: [token])
                }
                if let reply {
                    if reply == .integer(1) { logger.notice("Released a lock left by a call of unknown outcome", metadata: ["lock": "\(key)"]) }
                    return
                }
                try? await Task.sleep(for: .milliseconds(Int64.random(in: 100...300)))
            }
        }
    }

    /// `lock:<name>`, with the name's hash tag (a user's lock names the user's: `bulk:{user}`),
    /// or the whole name as the tag: the lock and its fencing counter must share a slot, as
    /// one script sets both.
    static func key(_ name: String) -> String {
        name.contains("{") && name.contains("}") ? "lock:\(name)" : "lock:{\(name)}"
    }

    private static func newToken() -> String {
        (0..<4).map { _ in String(UInt64.random(in: 0...UInt64.max), radix: 36) }.joined(separator: "-")
    }
}
