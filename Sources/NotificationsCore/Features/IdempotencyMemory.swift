internal import DequeModule
internal import Synchronization

/// Completed idempotent responses recently seen on this instance: the first, fastest tier.
///
/// Bounded by count and by bytes (a response body may be large), oldest dropped first. Order is
/// kept in a `Deque` of (key, generation): removing or replacing a key does not search the
/// deque; its stale slot is skipped when it reaches the front.
final class IdempotencyMemory: Sendable {
    private struct Slot {
        var record: IdempotencyRecord
        var generation: UInt64
        var bytes: Int
    }

    private struct State {
        var slots: [String: Slot] = [:]
        var order: Deque<(key: String, generation: UInt64)> = []
        var bytes = 0
        var nextGeneration: UInt64 = 0
    }

    private let state = Mutex(State())
    let maxCount: Int
    let maxBytes: Int

    init(maxCount: Int = 10_000, maxBytes: Int = 16 << 20) {
        self.maxCount = maxCount
        self.maxBytes = maxBytes
    }

    /// What one record costs: its body, fingerprint and key, plus bookkeeping.
    static func cost(key: String, _ record: IdempotencyRecord) -> Int {
        (record.response?.body.count ?? 0) + record.fingerprint.utf8.count + key.utf8.count + 128
    }

    func get(_ key: String, now: Timestamp) -> IdempotencyRecord? {
        state.withLock { state in
            guard let slot = state.slots[key], slot.record.expiresAt > now else { return nil }
            return slot.record
        }
    }

    func put(_ key: String, _ record: IdempotencyRecord) {
        let bytes = Self.cost(key: key, record)
        guard bytes <= maxBytes else { return }
        state.withLock { state in
            state.nextGeneration &+= 1
            if let old = state.slots.updateValue(Slot(record: record, generation: state.nextGeneration, bytes: bytes), forKey: key) {
                state.bytes -= old.bytes
            }
            state.bytes += bytes
            state.order.append((key, state.nextGeneration))
            while state.slots.count > maxCount || state.bytes > maxBytes, let oldest = state.order.popFirst() {
                if let slot = state.slots[oldest.key], slot.generation == oldest.generation {
                    state.slots[oldest.key] = nil
                    state.bytes -= slot.bytes
                }
            }
            // Replaced and removed keys leave stale slots behind: drop them before they pile up.
            if state.order.count > 2 * max(state.slots.count, 64) {
                let slots = state.slots
                state.order.removeAll { slots[$0.key]?.generation != $0.generation }
            }
        }
    }

    func remove(_ key: String) {
        state.withLock { state in
            if let slot = state.slots.removeValue(forKey: key) { state.bytes -= slot.bytes }
        }
    }

    var count: Int { state.withLock { $0.slots.count } }
    var bytes: Int { state.withLock { $0.bytes } }
}
