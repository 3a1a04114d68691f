// Only `Date`, which jwt-kit's claims are made of (the whole module clashes with Glibc's `timespec`).
internal import struct FoundationEssentials.Date
internal import JWTKit
internal import Synchronization

/// User tokens (`USER_TOKEN_KEYS`): HS256 JWTs, minted with the first key, verified with any.
///
/// jwt-kit signs, checks signatures and reads the JSON. Two things it would let through are
/// refused here first, as the contract requires: an `alg` other than HS256 (its key collection
/// verifies with the key `kid` names, whatever algorithm the header claims, so `HS512` or
/// `none` must be refused before) and a `kid` that is not ours (it falls back to its default
/// key for an unknown one). Times and audience are checked here too, with the contract's leeway.
///
/// Verifying is a pure function of the token's bytes and the keys, so a token that verified
/// is remembered (at most `rememberedLimit`, dropped whole when full) and its next requests
/// cost one dictionary lookup; its times are checked on every request.
public final class UserTokens: Sendable {
    /// The `aud` every token must carry.
    public static let audience = "notifications"
    /// Clock skew allowed on `exp`, `nbf` and `iat`.
    public static let leewaySeconds: Int64 = 30
    public static let ttlRange: ClosedRange<Int64> = 60...86_400
    static let rememberedLimit = 10_000

    private let tokenKeys: [UserTokenKey]
    private let kids: Set<String>
    private let signingKid: String?
    /// jwt-kit's key collection, an actor filled asynchronously: built on first use.
    private let built = Mutex<JWTKeyCollection?>(nil)
    private let remembered = Mutex<[String: UserToken]>([:])

    public init(keys tokenKeys: [UserTokenKey]) {
        self.tokenKeys = tokenKeys
        kids = Set(tokenKeys.map(\.kid))
        signingKid = tokenKeys.first?.kid
    }

    private func keys() async -> JWTKeyCollection {
        if let collection = built.withLock({ $0 }) { return collection }
        let collection = JWTKeyCollection()
        for key in tokenKeys {
            await collection.add(hmac: HMACKey(from: key.secret), digestAlgorithm: .sha256, kid: JWKIdentifier(string: key.kid))
        }
        // Two first uses at once build two equal collections; the first stored is kept.
        return built.withLock { stored in
            if let stored { return stored }
            stored = collection
            return collection
        }
    }

    /// False without `USER_TOKEN_KEYS`: no token is minted and none verifies.
    public var enabled: Bool { signingKid != nil }

    /// A token for `userId` with `scopes`, issued at `now` (whole seconds), valid `ttlSeconds`.
    public func mint(userId: String, scopes: Set<UserScope>, ttlSeconds: Int64, now: Timestamp) async throws -> (token: String, expiresAt: Int64) {
        guard let signingKid else { throw UserTokenRejection.disabled }
        let issuedAt = now.milliseconds / 1000
        let claims = Claims(
            sub: SubjectClaim(value: userId), iat: IssuedAtClaim(value: Self.date(issuedAt)),
            exp: ExpirationClaim(value: Self.date(issuedAt + ttlSeconds)), nbf: nil, aud: AudienceClaim(value: [Self.audience]),
            scope: UserScope.claim(scopes))
        var header = JWTHeader()
        header.alg = "HS256"
        let token = try await keys().sign(claims, kid: JWKIdentifier(string: signingKid), header: header)
        return (token, issuedAt + ttlSeconds)
    }

    /// `token` checked at `now` if this instance verified it before (one dictionary lookup);
    /// nil if it did not. Such a bearer is a user token: the API keys need not be compared with it.
    public func verifyKnown(_ token: String, now: Timestamp) -> Result<UserToken, UserTokenRejection>? {
        remembered.withLock { $0[token] }.map { Self.check($0, now: now) }
    }

    /// The token's user and scopes if it is well formed, ours, signed by one of our keys, and
    /// valid at `now` (revocation is checked by the caller: `TokenRevocations`).
    public func verify(_ token: String, now: Timestamp) async -> Result<UserToken, UserTokenRejection> {
        guard enabled else { return .failure(.disabled) }
        if let known = remembered.withLock({ $0[token] }) { return Self.check(known, now: now) }
        let verified: UserToken
        do {
            verified = try await verifySignature(token)
        } catch let rejection as UserTokenRejection {
            return .failure(rejection)
        } catch {
            return .failure(.malformed)
        }
        remembered.withLock { remembered in
            if remembered.count >= Self.rememberedLimit { remembered.removeAll(keepingCapacity: true) }
            remembered[token] = verified
        }
        return Self.check(verified, now: now)
    }

    private func verifySignature(_ token: String) async throws -> UserToken {
        // The header, read unverified only to refuse what jwt-kit would not (see the type's comment).
        let header: JWTHeader
        do {
            header = try DefaultJWTParser().parse(Array(token.utf8), as: Claims.self).header
        } catch {
            throw UserTokenRejection.malformed
        }
        guard header.alg == "HS256" else { throw UserTokenRejection.algorithm }
        guard let kid = header.kid, kids.contains(kid) else { throw UserTokenRejection.unknownKey }
        let claims: Claims
        do {
            claims = try await keys().verify(Array(token.utf8), as: Claims.self)
        } catch {
            throw UserTokenRejection.signature
        }
        guard claims.aud.value.contains(Self.audience) else { throw UserTokenRejection.audience }
        guard (try? Validation.userID(claims.sub.value, field: "sub")) != nil else { throw UserTokenRejection.malformed }
        var token = UserToken(
            userId: claims.sub.value, scopes: UserScope.parse(claim: claims.scope), issuedAt: Self.seconds(claims.iat.value),
            expiresAt: Self.seconds(claims.exp.value))
        // `nbf` is folded into the issue time's check: both say "not before".
        if let notBefore = claims.nbf.map({ Self.seconds($0.value) }) { token.notBefore = notBefore }
        return token
    }

    /// The time checks, on every request (a remembered token expires like any other).
    static func check(_ token: UserToken, now: Timestamp) -> Result<UserToken, UserTokenRejection> {
        let seconds = now.milliseconds / 1000
        guard token.expiresAt + leewaySeconds > seconds else { return .failure(.expired) }
        guard max(token.issuedAt, token.notBefore ?? token.issuedAt) <= seconds + leewaySeconds else { return .failure(.notYetValid) }
        return .success(token)
    }

    private static func date(_ seconds: Int64) -> Date { Date(timeIntervalSince1970: Double(seconds)) }

    /// A numeric date as whole seconds (a fractional one, which RFC 7519 allows, rounds down).
    private static func seconds(_ date: Date) -> Int64 { Int64(date.timeIntervalSince1970.rounded(.down)) }

    /// The claims this service mints and requires (`nbf` and `scope` are optional; a token
    /// without `sub`, `iat`, `exp` or `aud` does not decode, and is refused as malformed).
    struct Claims: JWTPayload {
        var sub: SubjectClaim
        var iat: IssuedAtClaim
        var exp: ExpirationClaim
        var nbf: NotBeforeClaim?
        var aud: AudienceClaim
        var scope: String?

        /// Nothing here: times and audience are checked by `UserTokens`, with the leeway.
        func verify(using algorithm: some JWTAlgorithm) async throws {}
    }
}
