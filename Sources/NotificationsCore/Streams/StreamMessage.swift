/// What travels on a user's stream channel (`stream:{userId}`), published after the MongoDB
/// write returned: a new notification (its time, id and JSON, one line), "the unread count
/// changed", or "the user's tokens up to this second are revoked" (their streams end).
/// Compact text, parsed without a JSON parser on the hot path.
public enum StreamMessage: Sendable, Equatable {
    case notification(id: String, createdAtMilliseconds: Int64, json: String)
    case countChanged
    case revoked(atSecond: Int64)

    static func channel(_ user: String) -> String { "stream:{\(user)}" }

    static func user(ofChannel channel: String) -> String? {
        guard channel.hasPrefix("stream:{"), channel.hasSuffix("}") else { return nil }
        return String(channel.dropFirst("stream:{".count).dropLast())
    }

    var payload: String {
        switch self {
        case .notification(let id, let createdAt, let json): "n \(createdAt) \(id) \(json)"
        case .countChanged: "c"
        case .revoked(let second): "r \(second)"
        }
    }

    init?(payload bytes: [UInt8]) {
        let text = String(decoding: bytes, as: UTF8.self)
        if text == "c" {
            self = .countChanged
            return
        }
        if text.hasPrefix("r "), let second = Int64(text.dropFirst(2)) {
            self = .revoked(atSecond: second)
            return
        }
        let parts = text.split(separator: " ", maxSplits: 3, omittingEmptySubsequences: false)
        guard parts.count == 4, parts[0] == "n", let createdAt = Int64(parts[1]), parts[2].utf8.count == 24 else { return nil }
        self = .notification(id: String(parts[2]), createdAtMilliseconds: createdAt, json: String(parts[3]))
    }

    init(_ notification: Notification) {
        var json = JSONWriter()
        notification.write(to: &json)
        self = .notification(id: notification.id, createdAtMilliseconds: notification.createdAt.milliseconds, json: json.string)
    }
}
