import Logging
import NIOCore
import NIOPosix
@_spi(Benchmarks) @testable import RedisClient
import Testing
import TestSupport

@Suite("RedisClient against a real redis-server", .serialized)
struct RedisClientTests {
    static func withPool(
        timeoutMilliseconds: Int64 = 1000, connections: Int = 2, _ body: @Sendable (RedisConnectionPool, ChildServer) async throws -> Void
    ) async throws {
        try await TestServers.fixtures.withPermit {
            try await runPool(timeoutMilliseconds: timeoutMilliseconds, connections: connections, body)
        }
    }

    static func runPool(
        timeoutMilliseconds: Int64, connections: Int, _ body: @Sendable (RedisConnectionPool, ChildServer) async throws -> Void
    ) async throws {
        let server = try await TestServers.startRedis()
        defer { server.stop() }
        let configuration = try RedisConfiguration(url: "redis://127.0.0.1:\(server.port)", operationTimeoutMilliseconds: timeoutMilliseconds)
        var withCount = configuration
        withCount.connectionCount = connections
        let pool = RedisConnectionPool(configuration: withCount, eventLoopGroup: MultiThreadedEventLoopGroup.singleton, logger: Logger(label: "test"))
        defer { pool.close() }
        try await body(pool, server)
    }

    @Test func tenThousandPipelinedCommandsAnswerInOrder() async throws {
        // About order, not latency: the default deadline, so a busy machine cannot fail it.
        try await Self.withPool(timeoutMilliseconds: 5000, connections: 1) { pool, _ async throws in
            let replies = try await withThrowingTaskGroup(of: (Int, RESPValue).self) { group in
                for index in 0..<10_000 {
                    group.addTask { (index, try await pool.send(RedisCommand("ECHO", ["value-\(index)"]))) }
                }
                var replies: [Int: RESPValue] = [:]
                for try await (index, reply) in group { replies[index] = reply }
                return replies
            }
            #expect(replies.count == 10_000)
            #expect(replies.allSatisfy { $0.value.string == "value-\($0.key)" })
        }
    }

    @Test func repliesOfEveryType() async throws {
        try await Self.withPool { pool, _ async throws in
            #expect(try await pool.send(.ping) == .simpleString("PONG"))
            #expect(try await pool.send(.set("k", Array("v\r\n\0".utf8))) == .simpleString("OK"))
            #expect(try await pool.send(.get("k")) == .bulkString(Array("v\r\n\0".utf8)))
            #expect(try await pool.send(.get("missing")) == .null)
            #expect(try await pool.send(.incr("n")) == .integer(1))
            #expect(try await pool.send(RedisCommand("RPUSH", ["l", "a", "b"])) == .integer(2))
            #expect(try await pool.send(RedisCommand("LRANGE", ["l", "0", "-1"])) == .array([.bulkString(Array("a".utf8)), .bulkString(Array("b".utf8))]))
        }
    }

    @Test func errorRepliesAreTypedServerErrors() async throws {
        try await Self.withPool { pool, _ async throws in
            _ = try await pool.send(.set("s", Array("text".utf8)))
            await #expect(throws: RedisError.server(code: "ERR", message: "ERR value is not an integer or out of range")) {
                _ = try await pool.send(.incr("s"))
            }
            _ = try await pool.send(RedisCommand("CONFIG", ["SET", "maxmemory", "1"]))
            do {
                _ = try await pool.send(.set("big", Array(repeating: 65, count: 10_000)))
                Issue.record("a write past maxmemory succeeded")
            } catch let error as RedisError {
                guard case .server(code: "OOM", _) = error else { Issue.record("expected OOM, got \(error)"); return }
            }
            // The connection is still usable after an error reply.
            #expect(try await pool.send(.ping) == .simpleString("PONG"))
        }
    }

    /// The premise of every unknown-outcome rule: a command whose reply never came (deadline
    /// passed, connection closed) may still be applied when the server resumes.
    @Test func aTimedOutCommandMayStillBeApplied() async throws {
        try await Self.withPool(timeoutMilliseconds: 300, connections: 1) { pool, server async throws in
            #expect(try await pool.send(.ping) == .simpleString("PONG"))
            server.pause()
            await #expect(throws: RedisError.timeout) { _ = try await pool.send(.set("late", Array("applied".utf8))) }
            try await Task.sleep(for: .milliseconds(200))
            server.resume()
            #expect(try await eventually { try await pool.send(.get("late")) } == .bulkString(Array("applied".utf8)))
        }
    }

    @Test func pausedServerTimesOutWithinDeadlineAndRecovers() async throws {
        try await Self.withPool(timeoutMilliseconds: 500) { pool, server async throws in
            #expect(try await pool.send(.ping) == .simpleString("PONG"))
            server.pause()
            let clock = ContinuousClock()
            let start = clock.now
            await #expect(throws: RedisError.timeout) { _ = try await pool.send(.ping) }
            #expect(clock.now - start < .milliseconds(1400))
            server.resume()
            // The timed-out connection was closed; the next call reconnects.
            #expect(try await eventually { try await pool.send(.ping) } == .simpleString("PONG"))
        }
    }

    /// One timer serves a connection's whole pipeline: it must still fire at each call's own
    /// deadline, whether that deadline is later than the one the timer was armed for (an
    /// answered call armed it) or earlier than every call already waiting.
    @Test func everyPipelinedCallTimesOutAtItsOwnDeadline() async throws {
        try await Self.withPool(timeoutMilliseconds: 5000, connections: 1) { pool, server async throws in
            let clock = ContinuousClock()
            // Armed for this call's deadline (now + 400 ms); answered at once.
            #expect(try await pool.send(.ping, deadline: .now() + .milliseconds(400)) == .simpleString("PONG"))
            try await Task.sleep(for: .milliseconds(200))
            server.pause()
            // Later than the armed deadline: the timer fires for the answered call first, finds
            // nothing late and must be armed again for this one.
            var start = clock.now
            await #expect(throws: RedisError.timeout) { _ = try await pool.send(.ping, deadline: .now() + .milliseconds(600)) }
            var waited = clock.now - start
            #expect(waited >= .milliseconds(550) && waited < .milliseconds(1500), "timed out after \(waited)")
            server.resume()
            #expect(try await eventually { try await pool.send(.ping) } == .simpleString("PONG"))

            // Earlier than the call already waiting: the timer must move earlier.
            server.pause()
            defer { server.resume() }
            async let patient: RedisError? = {
                do { _ = try await pool.send(.ping, deadline: .now() + .seconds(4)) } catch { return error as? RedisError }
                return nil
            }()
            try await Task.sleep(for: .milliseconds(50))
            start = clock.now
            await #expect(throws: RedisError.timeout) { _ = try await pool.send(.ping, deadline: .now() + .milliseconds(300)) }
            waited = clock.now - start
            #expect(waited < .milliseconds(1200), "the earlier deadline waited for the later one: \(waited)")
            // The connection closed with the late call: the patient one ahead of it is aborted, not left waiting.
            let ahead = await patient
            #expect(clock.now - start < .milliseconds(1500))
            guard case .aborted? = ahead else {
                Issue.record("the call pipelined ahead ended with \(String(describing: ahead))")
                return
            }
        }
    }

    @Test func connectingAndTheCommandShareOneDeadline() async throws {
        try await Self.withPool { pool, server async throws in
            _ = try await pool.send(RedisCommand("CONFIG", ["SET", "requirepass", "pw"]))
            let fresh = RedisConnectionPool(
                configuration: try RedisConfiguration(url: "redis://:pw@127.0.0.1:\(server.port)", operationTimeoutMilliseconds: 1000),
                eventLoopGroup: MultiThreadedEventLoopGroup.singleton, logger: Logger(label: "t"))
            defer { fresh.close() }
            server.pause()
            defer { server.resume() }
            // TCP still connects (the kernel accepts), AUTH then hangs: AUTH and the command must
            // fit in one 1 s deadline together, not 1 s each.
            let started = ContinuousClock.now
            await #expect(throws: RedisError.self) { _ = try await fresh.send(.ping) }
            #expect(ContinuousClock.now - started < .milliseconds(1700))
        }
    }

    @Test func killedServerIsRefusedThenReconnected() async throws {
        try await Self.withPool { pool, server async throws in
            _ = try await pool.send(.set("before", Array("1".utf8)))
            server.kill()
            await #expect(throws: RedisError.self) { _ = try await pool.send(.ping) }
            try await server.restart()
            #expect(try await eventually { try await pool.send(.ping) } == .simpleString("PONG"))
        }
    }

    @Test func scriptsSurviveScriptFlush() async throws {
        try await Self.withPool { pool, _ async throws in
            let script = RedisScript("return redis.call('INCRBY', KEYS[1], ARGV[1])")
            #expect(try await pool.evaluate(script, keys: ["counter"], arguments: ["2"]) == .integer(2))
            _ = try await pool.send(RedisCommand("SCRIPT", ["FLUSH"]))
            #expect(try await pool.evaluate(script, keys: ["counter"], arguments: ["3"]) == .integer(5))
        }
    }

    @Test func passwordAndDatabaseFromURL() async throws {
        try await Self.withPool { pool, server async throws in
            _ = try await pool.send(RedisCommand("CONFIG", ["SET", "requirepass", "s3cret:x"]))
            let configuration = try RedisConfiguration(url: "redis://:s3cret%3Ax@127.0.0.1:\(server.port)/3")
            #expect(configuration.database == 3)
            let other = RedisConnectionPool(configuration: configuration, eventLoopGroup: MultiThreadedEventLoopGroup.singleton, logger: Logger(label: "t"))
            defer { other.close() }
            _ = try await other.send(.set("in-db-3", Array("x".utf8)))
            #expect(try await other.send(RedisCommand("CLIENT", ["INFO"])).string?.contains("db=3") == true)
        }
    }

    @Test func urlParsing() throws {
        let full = try RedisConfiguration(url: "redis://user:pw@example.com:7000/2")
        #expect(full.host == "example.com" && full.port == 7000 && full.username == "user" && full.password == "pw" && full.database == 2)
        let plain = try RedisConfiguration(url: "redis://localhost")
        #expect(plain.port == 6379 && plain.password == nil && plain.database == 0)
        #expect(throws: RedisConfiguration.InvalidURL.self) { try RedisConfiguration(url: "http://x") }
        #expect(throws: RedisConfiguration.InvalidURL.self) { try RedisConfiguration(url: "redis://x:99999") }
        #expect(throws: RedisConfiguration.InvalidURL.self) { try RedisConfiguration(url: "redis://x/abc") }
    }

    @Test func readerHandlesSplitAndBadInput() throws {
        let reader = RESPReplyReader()
        let bytes = Array("*2\r\n$3\r\nabc\r\n:42\r\n".utf8)
        for (index, byte) in bytes.enumerated() {
            try reader.feed(ByteBuffer(bytes: [byte]))
            let reply = try reader.next()
            if index < bytes.count - 1 { #expect(reply == nil) } else { #expect(reply == .array([.bulkString(Array("abc".utf8)), .integer(42)])) }
        }
        let broken = RESPReplyReader()
        try broken.feed(ByteBuffer(bytes: Array("?oops\r\n".utf8)))
        #expect(throws: RedisError.self) { _ = try broken.next() }
    }
}

/// Retries for up to 5 s: reconnecting takes a backoff step or two.
func eventually<T>(_ body: () async throws -> T) async throws -> T {
    let clock = ContinuousClock()
    let deadline = clock.now + .seconds(5)
    while true {
        do {
            return try await body()
        } catch {
            if clock.now > deadline { throw error }
            try await Task.sleep(for: .milliseconds(50))
        }
    }
}
