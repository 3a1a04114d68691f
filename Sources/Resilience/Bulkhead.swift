internal import Synchronization

/// A fixed number of slots, taken without waiting: when none is free the caller is told so at
/// once and sheds its work (load shedding), instead of queueing without limit behind a slow
/// dependency. Lock-free, so the check itself costs nothing under overload.
public final class Bulkhead: Sendable {
    public let capacity: Int
    private let taken = Atomic<Int>(0)

    public init(capacity: Int) {
        precondition(capacity > 0, "a bulkhead needs at least one slot")
        self.capacity = capacity
    }

    /// Takes a slot if one is free; every `true` must be followed by exactly one `release()`.
    public func tryAcquire() -> Bool {
        var current = taken.load(ordering: .relaxed)
        while current < capacity {
            let (exchanged, original) = taken.compareExchange(expected: current, desired: current + 1, ordering: .acquiringAndReleasing)
            if exchanged { return true }
            current = original
        }
        return false
    }

    public func release() {
        let before = taken.subtract(1, ordering: .acquiringAndReleasing).oldValue
        precondition(before > 0, "released a slot that was not taken")
    }

    /// Slots taken now.
    public var inUse: Int { taken.load(ordering: .relaxed) }
}
