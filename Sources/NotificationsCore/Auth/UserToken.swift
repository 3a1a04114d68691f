/// What a user token lets its holder do: the `scope` claim, space-separated.
public enum UserScope: String, Sendable, CaseIterable, Comparable {
    /// The feed, counts, unread count, stream, bulk operation status, preferences GET.
    case feedRead = "feed:read"
    /// State changes, batch, all-at-once, delete.
    case feedWrite = "feed:write"
    /// Preferences PUT.
    case preferencesWrite = "preferences:write"

    public static func < (lhs: UserScope, rhs: UserScope) -> Bool {
        allCases.firstIndex(of: lhs)! < allCases.firstIndex(of: rhs)!
    }

    /// The `scope` claim's scopes; names this service does not know are ignored (a backend may
    /// mint tokens that other services read too).
    public static func parse(claim: String?) -> Set<UserScope> {
        Set((claim ?? "").split(separator: " ").compactMap { UserScope(rawValue: String($0)) })
    }

    /// The `scope` claim of these scopes, in a stable order.
    public static func claim(_ scopes: Set<UserScope>) -> String {
        scopes.sorted().map(\.rawValue).joined(separator: " ")
    }
}

/// A user token that verified: whose it is, what it may do, and when it was issued and expires
/// (whole seconds since the epoch, as JWT numeric dates are).
public struct UserToken: Sendable, Equatable {
    public var userId: String
    public var scopes: Set<UserScope>
    public var issuedAt: Int64
    public var expiresAt: Int64
    /// `nbf`, when the token has one.
    public var notBefore: Int64?

    public init(userId: String, scopes: Set<UserScope>, issuedAt: Int64, expiresAt: Int64, notBefore: Int64? = nil) {
        self.userId = userId
        self.scopes = scopes
        self.issuedAt = issuedAt
        self.expiresAt = expiresAt
        self.notBefore = notBefore
    }
}

/// Why a user token was refused (every reason is a 401; the reason goes to the debug log only).
public enum UserTokenRejection: String, Error, Sendable {
    /// Not three base64url parts of JSON, or a required claim (`sub`, `iat`, `exp`, `aud`) missing.
    case malformed
    /// `alg` is not HS256 (`none` included).
    case algorithm
    /// `kid` missing or not one of `USER_TOKEN_KEYS`.
    case unknownKey
    case signature
    case expired
    /// `nbf`, or `iat`, in the future (beyond the leeway).
    case notYetValid
    case audience
    /// Issued at or before its user's revocation.
    case revoked
    /// User tokens are off (`USER_TOKEN_KEYS` unset).
    case disabled
}
