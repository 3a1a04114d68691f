import MongoStore
@testable import NotificationsCore
import Testing

/// The state classes behind every state write: what an action does to each, and the order of a
/// bulk write's per-class updates that no concurrent class change can slip through.
@Suite("State classes")
struct StateClassTests {
    private static func state(_ code: Int64) -> StateClass { StateClass(code: code)! }

    @Test func actionsSetOnlyWhatTheContractSays() {
        let time = Timestamp(milliseconds: 1_000)
        let now = BSONValue.datetime(1_000)
        let fresh = StateClass(archived: false, read: false, seen: false)
        #expect(fresh.applying(.read, at: time)?.set == ["readAt": now, "seenAt": now, "sc": .int32(3)])
        #expect(fresh.applying(.seen, at: time)?.set == ["seenAt": now, "sc": .int32(1)])
        #expect(fresh.applying(.archive, at: time)?.set == ["archivedAt": now, "sc": .int32(4)])
        let seen = StateClass(archived: false, read: false, seen: true)
        #expect(seen.applying(.read, at: time)?.set == ["readAt": now, "sc": .int32(3)])
        let read = StateClass(archived: true, read: true, seen: true)
        #expect(read.applying(.unread, at: time)?.set == ["readAt": .null, "sc": .int32(5)])
        #expect(read.applying(.unarchive, at: time)?.set == ["archivedAt": .null, "sc": .int32(3)])
        // Repeats change nothing.
        #expect(fresh.applying(.unread, at: time) == nil)
        #expect(fresh.applying(.unarchive, at: time) == nil)
        #expect(read.applying(.read, at: time) == nil)
        #expect(read.applying(.seen, at: time) == nil)
        #expect(read.applying(.archive, at: time) == nil)
    }

    @Test func codesRoundTrip() {
        for stateClass in StateClass.allCases { #expect(StateClass(code: Int64(stateClass.code)) == stateClass) }
        #expect(StateClass(code: 8) == nil)
        #expect(StateClass(code: -1) == nil)
    }

    @Test func updateOrderStartsFromWhatIsPresent() {
        let seenAll = StateClass.live.filter { $0.after(.seen) != nil }
        let readAll = StateClass.live.filter { $0.after(.read) != nil }
        // The usual seen-all: one update.
        #expect(StateClass.updateOrder(changeable: seenAll, present: [Self.state(0)]) == [Self.state(0)])
        // Read-all: an unseen item seen meanwhile is still unread, so the seen class follows.
        #expect(StateClass.updateOrder(changeable: readAll, present: [Self.state(0)]) == [Self.state(0), Self.state(1)])
        // Seen-all over a read-but-unseen item: unread can move it to the fresh class, updated after.
        #expect(StateClass.updateOrder(changeable: seenAll, present: [Self.state(2)]) == [Self.state(2), Self.state(0)])
        // Archiving while read and unread toggle: no order is safe.
        let archive = StateClass.live.filter { $0.after(.archive) != nil }
        #expect(StateClass.updateOrder(changeable: archive, present: [Self.state(0)]) == nil)
        #expect(StateClass.updateOrder(changeable: StateClass.allCases, present: [Self.state(0)]) == nil)
        #expect(StateClass.updateOrder(changeable: readAll, present: []) == [])
    }

    /// For every action and every set of present classes: an order, when given, holds every
    /// class a concurrent action can move a still-changeable item to, after the class it left.
    @Test(arguments: StateAction.allCases)
    func noConcurrentMoveGoesBackwards(action: StateAction) {
        for changeable in [StateClass.allCases.filter { $0.after(action) != nil }, StateClass.live.filter { $0.after(action) != nil }] {
            for mask in 0..<(1 << changeable.count) {
                let present = Set(changeable.indices.filter { mask & (1 << $0) != 0 }.map { changeable[$0] })
                guard let order = StateClass.updateOrder(changeable: changeable, present: present) else { continue }
                #expect(present.isSubset(of: order))
                for (position, from) in order.enumerated() {
                    for concurrent in StateAction.allCases {
                        guard let to = from.after(concurrent), changeable.contains(to) else { continue }
                        #expect(order[(position + 1)...].contains(to), "\(action): \(from) → \(to) by \(concurrent)")
                    }
                }
            }
        }
    }
}
