@testable import NotificationsCore
import Testing

@Suite("Idempotency memory: bounded by count and bytes")
struct IdempotencyMemoryTests {
    static func record(bytes: Int) -> IdempotencyRecord {
        IdempotencyRecord(
            fingerprint: "fp", response: .init(status: 201, body: Array(repeating: 65, count: bytes), contentType: "application/json", location: nil),
            expiresAt: Timestamp(milliseconds: .max))
    }

    @Test func largeBodiesAreBoundedByBytes() {
        let memory = IdempotencyMemory(maxCount: 10_000, maxBytes: 4 << 20)
        for index in 0..<100 { memory.put("k\(index)", Self.record(bytes: 200_000)) }
        #expect(memory.bytes <= 4 << 20)
        #expect(memory.count == (4 << 20) / IdempotencyMemory.cost(key: "k10", Self.record(bytes: 200_000)))
        #expect(memory.get("k99", now: Timestamp(milliseconds: 0)) != nil, "the newest stay")
        #expect(memory.get("k0", now: Timestamp(milliseconds: 0)) == nil, "the oldest go first")
    }

    @Test func countBoundReplaceAndRemoveKeepTheAccountsRight() {
        let memory = IdempotencyMemory(maxCount: 3, maxBytes: 1 << 20)
        for index in 0..<5 { memory.put("k\(index)", Self.record(bytes: 10)) }
        #expect(memory.count == 3)
        memory.put("k4", Self.record(bytes: 1000))
        memory.remove("k3")
        #expect(memory.count == 2)
        #expect(memory.bytes == IdempotencyMemory.cost(key: "k2", Self.record(bytes: 10)) + IdempotencyMemory.cost(key: "k4", Self.record(bytes: 1000)))
        // Replaced and removed keys leave no slot that could evict a live record early.
        for round in 0..<1000 { memory.put("k4", Self.record(bytes: round % 50)) }
        #expect(memory.get("k2", now: Timestamp(milliseconds: 0)) != nil)
        #expect(memory.count == 2)
    }
}
