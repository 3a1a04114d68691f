internal import NotificationsCore

/// Who may call a `/v1` route (recorded with the route, read by `AccessMiddleware`): an API key
/// always; a user token only where the route names the scope it needs, and only on its own
/// user's path (`{userId}` = the token's `sub`).
enum RouteAccess: Sendable, Equatable {
    /// Backend only: creates, events, followers, tokens.
    case apiKey
    /// Also a user token with this scope.
    case user(UserScope)
    /// Also a user token with this scope, which may come as `?access_token=` (the stream: a
    /// browser's EventSource cannot send headers).
    case userOrQueryToken(UserScope)

    var scope: UserScope? {
        switch self {
        case .apiKey: nil
        case .user(let scope), .userOrQueryToken(let scope): scope
        }
    }
}
