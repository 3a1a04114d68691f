import Foundation
import HTTPTypes
import HummingbirdTesting
import MongoStore
import NotificationsCore
import NotificationsHTTP
import Testing
import TestSupport

/// Streams at scale: one shared check and poll per instance, resumes that share queries, and
/// an accept rate for reconnection storms (issue 20). Before, each stream queried MongoDB on
/// its own: N streams cost N queries per check, poll and resume.
@Suite("Streams at scale")
struct StreamScaleTests {
    static let users = 30

    func queries(_ harness: Harness, _ purpose: String) async throws -> Double {
        try await harness.metric("mongodb_queries_total", "purpose=\"\(purpose)\"") ?? -1
    }

    /// Thirty streams resume at once, each with its own `Last-Event-ID`: each gets exactly what
    /// it missed, and the resumes cost a few shared queries, not thirty.
    @Test func resumesArrivingTogetherShareQueriesAndStayExact() async throws {
        try await withHarness { harness in
            var seen: [String] = []
            var missed: [String] = []
            for index in 0..<Self.users { seen.append(try await harness.client.create(recipient: "r\(index)")["id"] as? String ?? "") }
            for index in 0..<Self.users { missed.append(try await harness.client.create(recipient: "r\(index)")["id"] as? String ?? "") }
            let before = try await queries(harness, "stream_resume")
            #expect(before == 0)
            let floors = seen
            let streams = try await withThrowingTaskGroup(of: (Int, SSEClient).self) { group in
                for index in 0..<Self.users {
                    group.addTask { (index, try await StreamTests.open(harness, "r\(index)", lastEventID: floors[index])) }
                }
                return try await group.reduce(into: [Int: SSEClient]()) { $0[$1.0] = $1.1 }
            }
            defer { for stream in streams.values { stream.close() } }
            for index in 0..<Self.users {
                let stream = try #require(streams[index])
                #expect(try await StreamTests.nextNotification(stream)?.id == missed[index], "stream \(index) gets what it missed")
                #expect(try await StreamTests.nextNotification(stream, timeout: .milliseconds(200)) == nil, "and nothing else")
            }
            let shared = try await queries(harness, "stream_resume") - before
            #expect(shared >= 1)
            #expect(shared <= Double(Self.users) / 10, "\(Self.users) resumes took \(shared) queries")
        }
    }

    /// Thirty streams, and a lost publish for each of their users: every one arrives at the next
    /// check, and that check is one query for all thirty users.
    @Test func theSafetyCheckIsOneQueryForAllOpenStreams() async throws {
        try await withHarness { harness in
            var streams: [SSEClient] = []
            defer { for stream in streams { stream.close() } }
            for index in 0..<Self.users {
                let stream = try await StreamTests.open(harness, "c\(index)")
                #expect(try await stream.next()?.event == "unread-count")
                streams.append(stream)
            }
            let before = try await queries(harness, "stream_check")
            var lost: [String] = []
            for index in 0..<Self.users { lost.append(try await StreamTests.storeUnpublished(harness, user: "c\(index)", idAge: .zero).description) }
            for (index, stream) in streams.enumerated() {
                #expect(try await StreamTests.nextNotification(stream, timeout: .seconds(12))?.id == lost[index], "stream \(index)")
            }
            let checks = try await queries(harness, "stream_check") - before
            // At most two checks fit in the wait (one every 10 s); each is one query for all.
            #expect(checks >= 1)
            #expect(checks <= 2, "\(checks) check queries for \(Self.users) streams")
        }
    }

    /// Redis killed with streams open: one poll query per interval for all of them (not one
    /// per stream), and a notification written meanwhile arrives on each stream once.
    @Test func pollingWhileRedisIsDownIsSharedToo() async throws {
        try await withHarness(configure: {
            $0.streamPollIntervalMilliseconds = 500
            $0.circuitRecoveryTimeoutMilliseconds = 60_000
        }) { harness in
            var streams: [SSEClient] = []
            defer { for stream in streams { stream.close() } }
            for index in 0..<Self.users {
                let stream = try await StreamTests.open(harness, "p\(index)")
                #expect(try await stream.next()?.event == "unread-count")
                streams.append(stream)
            }
            harness.redis.kill()
            // Each create opens the breaker a little more; after a few, push is given up.
            var created: [String] = []
            for index in 0..<Self.users { created.append(try await harness.client.create(recipient: "p\(index)")["id"] as? String ?? "") }
            let before = try await queries(harness, "stream_poll")
            let started = ContinuousClock.now
            for (index, stream) in streams.enumerated() {
                #expect(try await StreamTests.nextNotification(stream, timeout: .seconds(5))?.id == created[index], "stream \(index)")
            }
            try await Task.sleep(for: .seconds(2))
            let polls = try await queries(harness, "stream_poll") - before
            let intervals = (ContinuousClock.now - started) / .milliseconds(500)
            #expect(polls >= 1)
            #expect(polls <= intervals + 2, "\(polls) poll queries in \(intervals) intervals for \(Self.users) streams")
            for stream in streams { #expect(try await StreamTests.nextNotification(stream, timeout: .milliseconds(100)) == nil, "nothing twice") }
            try await harness.redis.restart()
        }
    }

    /// `STREAM_ACCEPT_PER_SECOND`: beyond it a new stream gets 503 `overloaded` with a
    /// `Retry-After` of 1–5 s; a second later streams open again.
    @Test func newStreamsBeyondTheAcceptRateAreRefusedWithASpreadRetryAfter() async throws {
        try await withHarness(configure: { $0.streamAcceptPerSecond = 3 }) { harness in
            var open: [SSEClient] = []
            defer { for stream in open { stream.close() } }
            for index in 0..<3 { open.append(try await StreamTests.open(harness, "a\(index)")) }
            #expect(open.allSatisfy { $0.status == 200 })
            let refused = try await harness.client.get("/v1/users/a3/notifications/stream")
            #expect(refused.status == .serviceUnavailable)
            #expect(try refused.jsonObject()["code"] as? String == "overloaded")
            let retryAfter = try #require(refused.headers[.retryAfter].flatMap { Int($0) })
            #expect((1...5).contains(retryAfter))
            #expect(try await harness.metric("http_requests_shed_total", #"reason="stream_accept""#) == 1)
            try await Task.sleep(for: .seconds(1))
            let later = try await StreamTests.open(harness, "a3")
            open.append(later)
            #expect(later.status == 200)
        }
    }
}
