import CoreMetrics
import Logging
@testable import NotificationsCore
import Testing

/// The near cache's rules on their own: what it may keep, when it must forget, its byte bound.
/// (Its invalidations through a real Redis are in NotificationsHTTPTests/NearCacheIntegrationTests.)
@Suite("Near cache: tickets, invalidations, flushes, byte bound")
struct NearCacheTests {
    static func make(maxBytes: Int = 1 << 20, ttl: Duration = .seconds(30)) -> NearCache {
        let near = NearCache(maxBytes: maxBytes, ttl: ttl, metrics: ServiceMetrics(factory: NOOPMetricsHandler.instance), logger: Logger(label: "near"))
        near.setActive(true)
        return near
    }

    static let body: [UInt8] = Array("{\"unreadCount\":1}".utf8)

    @Test func aFillIsKeptOnlyIfNothingInvalidatedItsUserSinceItsTicket() {
        let near = Self.make()
        let ticket = near.ticket(user: "ann")
        near.store(user: "ann", variant: "count", body: Self.body, ticket: ticket)
        #expect(near.lookup(user: "ann", variant: "count") == Self.body)

        // An invalidation that overtakes the reply of the read the ticket was taken for.
        let stale = near.ticket(user: "bob")
        near.invalidate(keys: [Array("feed:{bob}:v".utf8)])
        near.store(user: "bob", variant: "count", body: Self.body, ticket: stale)
        #expect(near.lookup(user: "bob", variant: "count") == nil)

        // A local write does the same.
        let before = near.ticket(user: "cy")
        near.invalidate(user: "cy")
        near.store(user: "cy", variant: "count", body: Self.body, ticket: before)
        #expect(near.lookup(user: "cy", variant: "count") == nil)
    }

    @Test func onlyVersionKeysOfItsNamespaceInvalidate() {
        let near = Self.make()
        for user in ["ann", "a:b}c"] { near.store(user: user, variant: "count", body: Self.body, ticket: near.ticket(user: user)) }
        // Entry keys change on every fill (immutable under their version); other namespaces are not ours.
        near.invalidate(keys: [Array("feed:{ann}:e:abc:count".utf8), Array("prefs:{ann}:v".utf8), Array("feed:{}:v".utf8)])
        #expect(near.lookup(user: "ann", variant: "count") != nil)
        near.invalidate(keys: [Array("feed:{a:b}c}:v".utf8)])
        #expect(near.lookup(user: "a:b}c", variant: "count") == nil)
        #expect(near.lookup(user: "ann", variant: "count") != nil)
        // Null payload (FLUSHALL): everything.
        near.invalidate(keys: nil)
        #expect(near.lookup(user: "ann", variant: "count") == nil)
    }

    @Test func itIsTrustedOnlyWhileInvalidationsFlow() {
        let near = Self.make()
        let ticket = near.ticket(user: "ann")
        near.store(user: "ann", variant: "count", body: Self.body, ticket: ticket)
        near.setActive(false)
        #expect(near.lookup(user: "ann", variant: "count") == nil)
        #expect(near.ticket(user: "ann") == nil)
        #expect(near.bytes == 0)
        // A read sent before the drop cannot fill the next session.
        near.setActive(true)
        near.store(user: "ann", variant: "count", body: Self.body, ticket: ticket)
        #expect(near.lookup(user: "ann", variant: "count") == nil)
        // A flush (the breaker opened) voids tickets too, without turning it off.
        let beforeFlush = near.ticket(user: "ann")
        near.flush(.breaker)
        near.store(user: "ann", variant: "count", body: Self.body, ticket: beforeFlush)
        #expect(near.lookup(user: "ann", variant: "count") == nil)
        near.store(user: "ann", variant: "count", body: Self.body, ticket: near.ticket(user: "ann"))
        #expect(near.lookup(user: "ann", variant: "count") == Self.body)
    }

    @Test func entriesExpireAfterTheFeedCacheTTL() {
        let near = Self.make(ttl: .seconds(30))
        let start = ContinuousClock.now
        near.store(user: "ann", variant: "count", body: Self.body, ticket: near.ticket(user: "ann"), now: start)
        #expect(near.lookup(user: "ann", variant: "count", now: start + .seconds(29)) != nil)
        #expect(near.lookup(user: "ann", variant: "count", now: start + .seconds(31)) == nil)
    }

    /// A copy of a Redis entry with 5 s left expires with it, not a whole TTL later (before
    /// the fix a missed invalidation could keep a copy stale for twice FEED_CACHE_TTL_SECONDS).
    @Test func aCopyOfARedisEntryKeepsOnlyWhatIsLeftOfItsLifetime() {
        let near = Self.make(ttl: .seconds(30))
        let start = ContinuousClock.now
        near.store(user: "ann", variant: "count", body: Self.body, ticket: near.ticket(user: "ann"), remaining: .seconds(5), now: start)
        #expect(near.lookup(user: "ann", variant: "count", now: start + .seconds(4)) != nil)
        #expect(near.lookup(user: "ann", variant: "count", now: start + .seconds(6)) == nil)
        // Never longer than the TTL, and nothing kept of an entry with no time left.
        near.store(user: "bob", variant: "count", body: Self.body, ticket: near.ticket(user: "bob"), remaining: .seconds(90), now: start)
        #expect(near.lookup(user: "bob", variant: "count", now: start + .seconds(31)) == nil)
        near.store(user: "cy", variant: "count", body: Self.body, ticket: near.ticket(user: "cy"), remaining: .zero, now: start)
        #expect(near.lookup(user: "cy", variant: "count", now: start) == nil)
    }

    @Test func itNeverHoldsMoreThanItsBytesAndKeepsWhatIsRead() {
        let near = Self.make(maxBytes: 100_000)
        let page = [UInt8](repeating: 65, count: 3600)
        near.store(user: "hot", variant: "page", body: page, ticket: near.ticket(user: "hot"))
        var largest = 0
        for index in 0..<1000 {
            near.store(user: "u\(index)", variant: "page", body: page, ticket: near.ticket(user: "u\(index)"))
            if index % 5 == 0 { #expect(near.lookup(user: "hot", variant: "page") == page, "a hot entry survives generations") }
            largest = max(largest, near.bytes)
        }
        #expect(largest <= 100_000)
        #expect(near.bytes > 25_000, "the older generation goes, not everything")
        // Larger than half the budget: not kept at all.
        near.store(user: "big", variant: "page", body: [UInt8](repeating: 66, count: 60_000), ticket: near.ticket(user: "big"))
        #expect(near.lookup(user: "big", variant: "page") == nil)
    }
}
