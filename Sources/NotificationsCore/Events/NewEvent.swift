/// Who an event is for: a list of users, or the followers of one user.
public enum Audience: Sendable, Equatable {
    public static let maxUserIDs = 1000

    case userIDs([String])
    case followersOf(String)
}

/// A validated `POST /v1/events` body.
public struct NewEvent: Sendable, Equatable {
    public var id: String
    public var type: String
    public var actorId: String
    public var audience: Audience
    public var title: String?
    public var body: String?
    public var dataJSON: String
    /// Every notification of the event expires then.
    public var expiresAt: Timestamp?

    public init(
        id: String, type: String, actorId: String, audience: Audience, title: String? = nil, body: String? = nil, dataJSON: String = "{}",
        expiresAt: Timestamp? = nil
    ) {
        self.expiresAt = expiresAt
        self.id = id
        self.type = type
        self.actorId = actorId
        self.audience = audience
        self.title = title
        self.body = body
        self.dataJSON = dataJSON
    }

    static let fields: Set<String> = ["id", "type", "actorId", "audience", "title", "body", "data", "expiresAt"]

    public init(json: JSONValue, now: Timestamp = SystemWallClock().now()) throws(ValidationError) {
        let reader = try JSONObjectReader(json, allowed: Self.fields)
        let id = try Validation.userID(reader.requiredString("id"), field: "id")
        let type = try Validation.notificationType(reader.requiredString("type"))
        let actorId = try Validation.userID(reader.requiredString("actorId"), field: "actorId")
        guard let audienceObject = try reader.optionalObject("audience") else { throw ValidationError(field: "audience", "is required") }
        let audience = try Self.audience(.object(audienceObject))
        // The notification fields follow the rules of POST /v1/notifications.
        var fields: [String: JSONValue] = ["recipientId": .string(actorId), "type": .string(type)]
        for name in ["title", "body", "data", "expiresAt"] where reader.has(name) {
            if case .object(let members) = json { fields[name] = members[name] }
        }
        let content = try NewNotification(json: .object(fields), now: now)
        self.init(
            id: id, type: type, actorId: actorId, audience: audience, title: content.title, body: content.body, dataJSON: content.dataJSON,
            expiresAt: content.expiresAt)
    }

    /// Exactly one of `{"userIds": [1...1000 ids]}` and `{"followersOf": id}`.
    static func audience(_ json: JSONValue) throws(ValidationError) -> Audience {
        let reader = try JSONObjectReader(json, allowed: ["userIds", "followersOf"], prefix: "audience.")
        let list = try reader.optionalArray("userIds")
        let followersOf = try reader.optionalString("followersOf")
        switch (list, followersOf) {
        case (let list?, nil):
            guard !list.isEmpty else { throw ValidationError(field: "audience.userIds", "must not be empty") }
            guard list.count <= Audience.maxUserIDs else {
                throw ValidationError(field: "audience.userIds", "must hold at most \(Audience.maxUserIDs) user ids")
            }
            var seen = Set<String>()
            var ids: [String] = []
            for (index, value) in list.enumerated() {
                guard case .string(let text) = value else { throw ValidationError(field: "audience.userIds[\(index)]", "must be a string") }
                let id = try Validation.userID(text, field: "audience.userIds[\(index)]")
                if seen.insert(id).inserted { ids.append(id) }
            }
            return .userIDs(ids)
        case (nil, let user?):
            return .followersOf(try Validation.userID(user, field: "audience.followersOf"))
        default:
            throw ValidationError(field: "audience", "must have exactly one of userIds and followersOf")
        }
    }
}
