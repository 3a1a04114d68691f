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
        return try await RequestID.$apiKeyName.withValue(key.name) { try await next(request, context) }
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
