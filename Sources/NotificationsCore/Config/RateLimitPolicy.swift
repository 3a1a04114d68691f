/// A rate-limit policy from `RATE_LIMIT_POLICIES`: `name:limit/window` or `name:unlimited`.
///
/// `name` is an API-key name or `*` (every other key). `limit/window` is GCRA: bursts of
/// up to `limit`, refilled at one request per `window/limit`.
public struct RateLimitPolicy: Sendable, Equatable {
    public var name: String
    /// nil: unlimited (internal callers).
    public var limit: Int?
    public var windowMilliseconds: Int64

    public init(name: String, limit: Int?, windowMilliseconds: Int64) {
        self.name = name
        self.limit = limit
        self.windowMilliseconds = windowMilliseconds
    }

    public struct ParseError: Error {
        public var message: String
    }

    public static func parseList(_ text: String) throws(ParseError) -> [RateLimitPolicy] {
        var policies: [RateLimitPolicy] = []
        for entry in text.split(separator: ",") {
            let policy = try parse(entry.trimmingSpaces)
            guard !policies.contains(where: { $0.name == policy.name }) else {
                throw ParseError(message: "policy for \"\(policy.name)\" appears twice")
            }
            policies.append(policy)
        }
        guard !policies.isEmpty else { throw ParseError(message: "no policy given (expected e.g. *:100/1s)") }
        return policies
    }

    public static func parse(_ entry: String) throws(ParseError) -> RateLimitPolicy {
        let parts = entry.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
        guard parts.count == 2, !parts[0].isEmpty else {
            throw ParseError(message: "\"\(entry)\" must be name:limit/window, e.g. *:100/1s")
        }
        let name = String(parts[0])
        if parts[1] == "unlimited" { return RateLimitPolicy(name: name, limit: nil, windowMilliseconds: 1000) }
        let rule = parts[1].split(separator: "/", omittingEmptySubsequences: false)
        guard rule.count == 2, let limit = Int(rule[0]), limit >= 1, limit <= 1_000_000_000, let window = windowMilliseconds(rule[1]) else {
            throw ParseError(message: "\"\(entry)\" must be name:limit/window with limit ≥ 1 and window like 1s, 60s, 15m, 1h or 500ms")
        }
        // One request per window/limit: below a microsecond the limiters cannot tell requests apart.
        guard Int64(limit) <= window * 1000 else {
            throw ParseError(message: "\"\(entry)\" allows more than one request per microsecond")
        }
        return RateLimitPolicy(name: name, limit: limit, windowMilliseconds: window)
    }

    /// `500ms`, `1s`, `15m`, `1h`, `1d`; between 1 ms and 30 days.
    static func windowMilliseconds(_ text: Substring) -> Int64? {
        let units: [(String, Int64)] = [("ms", 1), ("s", 1000), ("m", 60_000), ("h", 3_600_000), ("d", 86_400_000)]
        for (suffix, factor) in units where text.hasSuffix(suffix) {
            guard let count = Int64(text.dropLast(suffix.count)), count >= 1, count <= 30 * 86_400_000 / factor else { return nil }
            return count * factor
        }
        return nil
    }

    public var windowSeconds: Double { Double(windowMilliseconds) / 1000 }
}
