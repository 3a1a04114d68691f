/// All rate-limit policies: the global ones from `RATE_LIMIT_POLICIES` and, from the config
/// file's `routeGroupPolicies`, per route group (`read`, `write`).
///
/// The most specific policy wins: the route group's policy for the key, then the global
/// policy for the key (so `name:unlimited` exempts a key everywhere), then the group's `*`,
/// then the global `*`.
public struct RateLimitPolicies: Sendable, Equatable {
    public var global: [RateLimitPolicy]
    public var byGroup: [RouteGroup: [RateLimitPolicy]]

    public init(global: [RateLimitPolicy], byGroup: [RouteGroup: [RateLimitPolicy]] = [:]) {
        self.global = global
        self.byGroup = byGroup
    }

    public struct Resolved: Sendable, Equatable {
        public var policy: RateLimitPolicy
        /// The policy's name in headers: `default` for `*`, else the key's name; prefixed by the group for group policies.
        public var name: String
        /// Part of the bucket key, so a group policy counts separately from the global one.
        public var scope: String
    }

    public func policy(forKey key: String, group: RouteGroup) -> Resolved {
        let groupPolicies = byGroup[group] ?? []
        if let policy = groupPolicies.first(where: { $0.name == key }) { return grouped(policy, group) }
        if let policy = global.first(where: { $0.name == key }) { return plain(policy) }
        if let policy = groupPolicies.first(where: { $0.name == "*" }) { return grouped(policy, group) }
        return plain(global.first { $0.name == "*" } ?? RateLimitPolicy(name: "*", limit: 100, windowMilliseconds: 1000))
    }

    /// The policy of user tokens: `user` for the route group, else `user` globally, else
    /// `user:20/1s` (never `*`: a browser's user is not a backend key).
    public func userPolicy(group: RouteGroup) -> Resolved {
        if let policy = (byGroup[group] ?? []).first(where: { $0.name == Self.userPolicyName }) { return grouped(policy, group) }
        return plain(global.first { $0.name == Self.userPolicyName } ?? Self.defaultUserPolicy)
    }

    public static let userPolicyName = "user"
    public static let defaultUserPolicy = RateLimitPolicy(name: userPolicyName, limit: 20, windowMilliseconds: 1000)

    private func grouped(_ policy: RateLimitPolicy, _ group: RouteGroup) -> Resolved {
        Resolved(policy: policy, name: "\(group.rawValue)-\(Self.display(policy))", scope: "\(group.rawValue):\(policy.name)")
    }

    private func plain(_ policy: RateLimitPolicy) -> Resolved {
        Resolved(policy: policy, name: Self.display(policy), scope: "all:\(policy.name)")
    }

    private static func display(_ policy: RateLimitPolicy) -> String {
        policy.name == "*" ? "default" : policy.name
    }
}
