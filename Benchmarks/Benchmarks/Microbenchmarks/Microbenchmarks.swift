import Benchmark
@_spi(Benchmarks) import MongoStore
import NIOCore
import NotificationsCore
@_spi(Benchmarks) import RedisClient
import Resilience

/// The hot pure-CPU steps of a request, with their allocation counts:
///
///     swift package --package-path Benchmarks benchmark
///
/// Targets (issue 11): breaker admission while open < 1 µs with zero allocations.
let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .mallocCountTotal, .throughput], scalingFactor: .kilo, maxDuration: .seconds(2))

    Benchmark("Breaker admission, closed") { benchmark in
        let breaker = CircuitBreaker(configuration: .init(), clock: ContinuousClock(), onTransition: { _ in })
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            let permission = breaker.acquire()
            breaker.record(success: true, probe: false)
            blackHole(permission)
        }
    }

    Benchmark("Breaker admission, open") { benchmark in
        let breaker = CircuitBreaker(configuration: .init(), clock: ContinuousClock(), onTransition: { _ in })
        breaker.forceOpen()
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations { blackHole(breaker.acquire()) }
    }

    Benchmark("In-memory GCRA check") { benchmark in
        let limit = GCRALimit(limit: 100, window: .seconds(1))
        var tat: Duration? = nil
        var now = Duration.zero
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            now += .milliseconds(5)
            let (decision, newTAT) = GCRA.check(limit: limit, tat: tat, now: now)
            tat = newTAT ?? tat
            blackHole(decision)
        }
    }

    Benchmark("RESP parse, 100-element array reply", configuration: .init(scalingFactor: .one)) { benchmark in
        var wire = "*100\r\n"
        for index in 0..<100 {
            let member = "member-\(100_000 + index)"
            wire += "$\(member.utf8.count)\r\n\(member)\r\n"
        }
        let buffer = ByteBuffer(string: wire)
        let reader = RESPReplyReader()
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            try reader.feed(buffer)
            blackHole(try reader.next())
        }
    }

    Benchmark("BSON encode + decode, one notification", configuration: .init(scalingFactor: .one)) { benchmark in
        let document: BSONDocument = [
            "_id": .objectID(ObjectID(hex: "6566f0a1b2c3d4e5f6a7b8c9")!), "recipientId": "user-42", "type": "comment",
            "actorId": "user-7", "title": "New comment", "body": "Someone commented on your post", "data": "{\"postId\":\"p1\"}",
            "createdAt": .datetime(1_701_000_000_000), "readAt": .null,
        ]
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations { blackHole(OwnedBSON(document).document) }
    }

    Benchmark("Feed JSON encode, 20 notifications", configuration: .init(scalingFactor: .one)) { benchmark in
        let items = (0..<20).map { index in
            Notification(
                id: "6566f0a1b2c3d4e5f6a7b8\(10 + index)", recipientId: "user-42", type: "comment", actorId: "user-7", title: "New comment",
                body: "Someone commented on your post", dataJSON: "{\"postId\":\"p\(index)\"}",
                createdAt: Timestamp(milliseconds: 1_701_000_000_000 + Int64(index)), readAt: nil)
        }
        let page = FeedPage(items: items, nextCursor: nil, unreadCount: 20)
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations { blackHole(page.json) }
    }
}
