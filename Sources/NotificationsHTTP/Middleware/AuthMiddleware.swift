internal import HTTPTypes
public import Hummingbird
public import NotificationsCore
internal import Logging

/// `/v1/*`: who is calling. `Authorization: Bearer <secret>` against `API_KEYS` (compared in
/// constant time), else a user token (`UserTokens`, then `TokenRevocations`); on the stream
/// route only, the token may come as `?access_token=` instead. The key's name, or `user:<sub>`,
/// (never a secret or a token) goes into the context and the request's log metadata. What the
/// caller may do is decided after the rate limit, by `AccessMiddleware`.
public struct AuthMiddleware: RouterMiddleware {
    public typealias Context = AppRequestContext
    let keys: [APIKey]
    let tokens: UserTokens
    let revocations: TokenRevocations
    let routes: RouteTable
    let clock: any WallClock

    public init(keys: [APIKey], tokens: UserTokens, revocations: TokenRevocations, routes: RouteTable, clock: any WallClock = SystemWallClock()) {
        self.keys = keys
        self.tokens = tokens
        self.revocations = revocations
        self.routes = routes
        self.clock = clock
    }

    public func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        var context = context
        let queryToken = request.uri.queryParameters.get("access_token")
        if queryToken != nil, routes.access(request.method, template: context.endpointPath) != .userOrQueryToken(.feedRead) {
            // Accepted on the stream only: anywhere else it would end up in logs and caches.
            throw Problem.invalidToken("A token in the query is accepted on the stream route only.")
        }
        if let bearer = BearerToken.parse(request.headers[.authorization]) {
            // A token verified before is no API key: the keys are not compared with it.
            if let known = tokens.verifyKnown(bearer, now: clock.now()) {
                context.userToken = try await admit(known, context: context)
            } else if let key = match(bearer) {
                context.apiKey = key
                return try await RequestID.$apiKeyName.withValue(key.name) { try await next(request, context) }
            } else {
                guard tokens.enabled else { throw Problem.unauthorized() }
                context.userToken = try await verify(bearer, context: context)
            }
        } else if let queryToken, tokens.enabled {
            context.userToken = try await verify(queryToken, context: context)
        } else {
            throw Problem.unauthorized()
        }
        return try await RequestID.$apiKeyName.withValue(context.principalName) { try await next(request, context) }
    }

    private func verify(_ token: String, context: Context) async throws -> UserToken {
        try await admit(await tokens.verify(token, now: clock.now()), context: context)
    }

    /// A verified token not revoked since it was issued; else 401 `invalid_token`.
    private func admit(_ verification: Result<UserToken, UserTokenRejection>, context: Context) async throws -> UserToken {
        switch verification {
        case .success(let verified):
            guard try await !revocations.isRevoked(verified) else {
                context.logger.debug("User token refused", metadata: ["reason": "revoked"])
                throw Problem.invalidToken("The token was revoked.")
            }
            return verified
        case .failure(let rejection):
            context.logger.debug("User token refused", metadata: ["reason": .string(rejection.rawValue)])
            throw Problem.invalidToken("The token is not valid: \(rejection.detail).")
        }
    }

    /// Compares against every key, always, so timing reveals neither which key nor how much matched.
    func match(_ token: String) -> APIKey? {
        var found: APIKey?
        for key in keys where ConstantTime.equal(token, key.secret) {
            found = key
        }
        return found
    }
}

extension UserTokenRejection {
    /// What a client is told (no more than which check failed).
    var detail: String {
        switch self {
        case .malformed: "malformed, or a required claim (sub, iat, exp, aud) is missing"
        case .algorithm: "only HS256 is accepted"
        case .unknownKey: "unknown kid"
        case .signature: "bad signature"
        case .expired: "expired"
        case .notYetValid: "not valid yet"
        case .audience: "wrong audience"
        case .revoked: "revoked"
        case .disabled: "user tokens are not enabled"
        }
    }
}

enum BearerToken {
    /// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive).
    /// On bytes: it runs for every request.
    static func parse(_ header: String?) -> String? {
        let scheme = "bearer ".utf8
        // ORing 0x20 lowercases ASCII letters and keeps the space: "BeArEr " matches.
        guard let header, header.utf8.count > scheme.count, zip(header.utf8, scheme).allSatisfy({ $0 | 0x20 == $1 }) else { return nil }
        let token = header[header.utf8.index(header.startIndex, offsetBy: scheme.count)...].trimmingCharacters()
        return token.isEmpty ? nil : token
    }
}

enum ConstantTime {
    /// Equality whose running time depends only on the lengths, not on where the bytes differ.
    static func equal(_ lhs: String, _ rhs: String) -> Bool {
        let left = Array(lhs.utf8)
        let right = Array(rhs.utf8)
        var difference = UInt8(left.count == right.count ? 0 : 1)
        for index in 0..<max(left.count, right.count) {
            let a = index < left.count ? left[index] : 0
            let b = index < right.count ? right[index] : 0
            difference |= a ^ b
        }
        return difference == 0
    }
}
