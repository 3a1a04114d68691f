public import Hummingbird
public import NIOCore
public import NotificationsCore

/// Per-request state: the authenticated API key and the peer's address (for loopback-only admin).
public struct AppRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    /// Set by `AuthMiddleware` on `/v1` routes: the API key, or the user token, that authenticated the request.
    public var apiKey: APIKey?
    public var userToken: UserToken?
    public let remoteAddress: SocketAddress?
    /// The client's connection: a stream whose client stopped reading is dropped by closing it.
    public let channel: any Channel
    /// Set by `IdempotencyMiddleware` for a request that holds an idempotency claim.
    public var idempotencyClaim: IdempotencyStore.Claim?
    /// A feed page request's query, validated by its cache probe (`RateLimitMiddleware`), so
    /// the handler does not parse it a second time.
    var pageQuery: PageQuery?

    /// Who is calling, as logs, idempotency scopes and rate-limit buckets name it: the API key's
    /// name, or `user:<sub>` for a user token.
    public var principalName: String? {
        apiKey?.name ?? userToken.map { "user:\($0.userId)" }
    }

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        remoteAddress = source.channel.remoteAddress
        channel = source.channel
    }

    /// Bodies are read by `RequestBody` with the contract's own limit.
    public var maxUploadSize: Int { RequestBody.maxBytes }
}
