/// A `POST /v1/users/{userId}/tokens` body: `{"ttlSeconds": 60–86400, "scopes": [...]}`, both
/// optional (an hour; every scope).
public struct TokenRequest: Sendable, Equatable {
    public static let defaultTTLSeconds: Int64 = 3600

    public var ttlSeconds: Int64
    public var scopes: Set<UserScope>

    public init(ttlSeconds: Int64 = Self.defaultTTLSeconds, scopes: Set<UserScope> = Set(UserScope.allCases)) {
        self.ttlSeconds = ttlSeconds
        self.scopes = scopes
    }

    public init(json: JSONValue) throws(ValidationError) {
        let reader = try JSONObjectReader(json, allowed: ["ttlSeconds", "scopes"])
        self.init()
        // Absent means the default; null is not a number (nor, below, an array).
        switch reader.value("ttlSeconds") {
        case nil:
            break
        case .integer(let seconds)? where UserTokens.ttlRange.contains(seconds):
            ttlSeconds = seconds
        default:
            throw ValidationError(
                field: "ttlSeconds", "must be a whole number of seconds from \(UserTokens.ttlRange.lowerBound) to \(UserTokens.ttlRange.upperBound)")
        }
        if reader.value("scopes") == .null { throw ValidationError(field: "scopes", "must be an array of scopes, not null") }
        if let names = try reader.optionalArray("scopes") {
            var scopes = Set<UserScope>()
            for (index, name) in names.enumerated() {
                guard case .string(let text) = name, let scope = UserScope(rawValue: text) else {
                    let known = UserScope.allCases.map(\.rawValue).joined(separator: ", ")
                    throw ValidationError(field: "scopes[\(index)]", "must be one of \(known)")
                }
                scopes.insert(scope)
            }
            guard !scopes.isEmpty else { throw ValidationError(field: "scopes", "must name at least one scope") }
            self.scopes = scopes
        }
    }
}
