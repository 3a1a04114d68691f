public import RedisClient
internal import NIOCore
internal import Resilience
internal import Synchronization

/// One script call of `RedisGateway.evaluateTogether`.
public struct ScriptCall: Sendable {
    let operation: ServiceMetrics.Operation
    /// The key whose master takes the call (every key of `keys` shares its slot).
    let key: String
    let script: RedisScript
    let keys: [String]
    let arguments: [String]

    public init(_ operation: ServiceMetrics.Operation, key: String, script: RedisScript, keys: [String], arguments: [String]) {
        self.operation = operation
        self.key = key
        self.script = script
        self.keys = keys
        self.arguments = arguments
    }
}

extension RedisGateway {
    /// Two script calls on two masters of a cluster, sent together and awaited as one: the
    /// request suspends once. Sent from two tasks (`async let`), the second call cost the
    /// service as much CPU as the rest of a cached read (a child task, and a suspension and a
    /// resumption on another thread per call); this is what kept an API key's rate-limited read
    /// on a cluster at 0.8 of one Redis.
    ///
    /// Each call keeps `call`'s rules: its master's breaker, the request's scope, its fallback
    /// counted. What cannot go at once (a breaker half-open or refusing, a connection not up, a
    /// script not loaded yet) and an error reply (a redirection, `NOSCRIPT`, `TRYAGAIN`: nothing
    /// was applied) go through `call` instead, which connects, loads and follows redirections.
    /// A call that failed or timed out after it was sent is never sent again: its outcome is
    /// unknown, so it falls back like any failed call.
    public func evaluateTogether(_ first: ScriptCall, _ second: ScriptCall) async -> (RESPValue?, RESPValue?) {
        guard let one = ready(first), let other = ready(second, alongside: one) else {
            async let firstReply = evaluate(first)
            let secondReply = await evaluate(second)
            return (await firstReply, secondReply)
        }
        let pair = ReplyPair()
        let (firstResult, secondResult) = await withUnsafeContinuation { continuation in
            pair.continuation = continuation
            one.send(first).whenComplete { pair.complete(first: $0) }
            other.send(second).whenComplete { pair.complete(second: $0) }
        }
        // Not `async let`: settling a reply does not suspend (only a redirected call does).
        let firstReply = await settle(first, one, firstResult)
        let secondReply = await settle(second, other, secondResult)
        return (firstReply, secondReply)
    }

    /// A call sent at once: where it goes, and the breaker that records its outcome.
    private struct ReadyCall {
        let node: String
        let breaker: RedisBreakers.Breaker
        let prepared: PreparedScript

        func send(_ call: ScriptCall) -> EventLoopFuture<RESPValue> {
            prepared.submit(keys: call.keys, arguments: call.arguments)
        }
    }

    /// The call's master if it can take the call at once with a non-probe permission (which
    /// holds nothing to give back); nil otherwise, with nothing taken.
    /// - Parameter first: the call this one goes alongside: it takes the same connection slot.
    private func ready(_ call: ScriptCall, alongside first: ReadyCall? = nil) -> ReadyCall? {
        guard case .cluster(let cluster) = deployment, let route = cluster.route(slot: HashSlot.of(call.key)),
              Self.requestScope?.redisFailed(node: route.node.name) != true
        else { return nil }
        let breaker = breakers.breaker(for: route.node.name)
        guard case .allowed(probe: let probe) = breaker.acquire() else { return nil }
        // The second call goes on the first's slot of its own pool: the same event loop.
        guard !probe, let prepared = route.prepared(call.script, atSlot: first?.prepared.slot) else {
            breaker.release(probe: probe)
            return nil
        }
        return ReadyCall(node: route.node.name, breaker: breaker, prepared: prepared)
    }

    /// Error replies of a script that did not run: the call can go again, the usual way (which
    /// follows a redirection, loads the script, or waits out a migration).
    static let notApplied: Set<String> = ["MOVED", "ASK", "TRYAGAIN", "CLUSTERDOWN", "NOSCRIPT", "LOADING", "BUSY", "OOM", "MASTERDOWN", "READONLY"]

    /// One call the usual way.
    private func evaluate(_ call: ScriptCall) async -> RESPValue? {
        await self.call(call.operation, key: call.key) { redis in
            try await redis.evaluate(call.script, keys: call.keys, arguments: call.arguments)
        }
    }

    /// What became of a call sent at once: a reply is recorded; an error reply of a script that
    /// did not run sends it again the usual way; a failure falls back.
    private func settle(_ call: ScriptCall, _ sent: ReadyCall, _ result: Result<RESPValue, any Error>) async -> RESPValue? {
        switch result {
        case .success(.error(let text)):
            let error = RedisError.fromErrorReply(text)
            if case .server(let code, _) = error, Self.notApplied.contains(code) {
                return await evaluate(call)
            }
            settle(failure: error, of: call.operation, on: sent.node, breaker: sent.breaker, probe: false)
            return nil
        case .success(let reply):
            sent.breaker.record(success: true, probe: false)
            return reply
        case .failure(let error):
            settle(failure: error, of: call.operation, on: sent.node, breaker: sent.breaker, probe: false)
            return nil
        }
    }
}

/// Two replies awaited as one: the task suspends once, and whichever reply comes second
/// resumes it with both. (`EventLoopFuture.and` did the same with five more futures, a hop
/// between event loops and generic metadata looked up at run time, per request.)
private final class ReplyPair: @unchecked Sendable {
    typealias Reply = Result<RESPValue, any Error>

    // Each written once, by its own reply's callback, before that callback's decrement of
    // `waiting`; read by the callback whose decrement ends it, after it (acquiring-releasing).
    private var first: Reply?
    private var second: Reply?
    /// Set before either call is sent.
    var continuation: UnsafeContinuation<(Reply, Reply), Never>?
    private let waiting = Atomic<Int>(2)

    func complete(first reply: Reply) {
        first = reply
        arrived()
    }

    func complete(second reply: Reply) {
        second = reply
        arrived()
    }

    private func arrived() {
        guard waiting.subtract(1, ordering: .acquiringAndReleasing).newValue == 0, let first, let second else { return }
        continuation?.resume(returning: (first, second))
    }
}
