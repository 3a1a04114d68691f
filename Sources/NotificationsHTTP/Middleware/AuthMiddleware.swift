internal import HTTPTypes
public import Hummingbird
public import NotificationsCore
internal import Logging

/// `/v1/*`: `Authorization: Bearer <secret>` against `API_KEYS`, compared in constant time.
/// The key's name (never its secret) goes into the context and the request's log metadata.
public struct AuthMiddleware: RouterMiddleware {
    public typealias Context = AppRequestContext
    let keys: [APIKey]

    public init(keys: [APIKey]) {
        self.keys = keys
    }

    public func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard let token = BearerToken.parse(request.headers[.authorization]), let key = match(token) else {
            throw Problem.unauthorized()
        }
        var context = context
        context.apiKey = key
        context.logger[metadataKey: "api_key"] = .string(key.name)
        return try await next(request, context)
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

enum BearerToken {
    /// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive).
    static func parse(_ header: String?) -> String? {
        guard let header, header.count > 7, header.prefix(7).lowercased() == "bearer " else { return nil }
        let token = header.dropFirst(7).trimmingCharacters()
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
