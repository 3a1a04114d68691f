/// Redis server-assisted client-side caching, broadcasting mode, for a near cache.
///
/// The subscriber connection (RESP2, so pushes arrive as pub/sub messages) subscribes to
/// `__redis__:invalidate`; a second, otherwise idle connection turns tracking on with
/// `CLIENT TRACKING on REDIRECT <subscriber's id> BCAST PREFIX ...`. From then on every
/// change to a key under a prefix — by any client, and expiry and eviction too — is
/// announced to the subscriber. Tracking ends with either connection, silently: so the
/// near cache is told `active(false)` the moment either one closes, and must not be trusted
/// again until a new pair reports `active(true)`.
public struct InvalidationTracking: Sendable {
    /// The key prefixes to be told about.
    public var prefixes: [String]
    /// Keys that changed; nil: every key may have changed (`FLUSHALL`, `FLUSHDB`).
    public var onInvalidate: @Sendable (_ keys: [[UInt8]]?) -> Void
    /// true once invalidations flow; false as soon as they may not.
    public var onActive: @Sendable (Bool) -> Void

    public static let channel = "__redis__:invalidate"

    public init(prefixes: [String], onInvalidate: @escaping @Sendable ([[UInt8]]?) -> Void, onActive: @escaping @Sendable (Bool) -> Void) {
        self.prefixes = prefixes
        self.onInvalidate = onInvalidate
        self.onActive = onActive
    }

    /// The command the tracking connection sends.
    func command(redirectingTo clientID: Int64) -> RedisCommand {
        RedisCommand("CLIENT", ["TRACKING", "on", "REDIRECT", String(clientID), "BCAST"] + prefixes.flatMap { ["PREFIX", $0] })
    }

    /// An invalidation message's payload: an array of keys, or nil (null) for "everything".
    static func keys(in payload: RESPValue) -> [[UInt8]]?? {
        switch payload {
        case .null: return .some(nil)
        case .array(let parts):
            return .some(parts.compactMap { if case .bulkString(let key) = $0 { key } else { nil } })
        default: return nil
        }
    }
}
