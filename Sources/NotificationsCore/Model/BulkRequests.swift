/// `POST …/notifications/{seen-all|read-all|archive-all}`: the optional filter, validated. Any
/// other field is refused, so a misspelt filter never widens the operation to everything.
public struct AllAtOnceFilter: Sendable, Equatable {
    public var type: String?
    public var before: Timestamp?

    public init(type: String? = nil, before: Timestamp? = nil) {
        self.type = type
        self.before = before
    }

    public init(json: JSONValue) throws(ValidationError) {
        let reader = try JSONObjectReader(json, allowed: ["type", "before"])
        type = try reader.optionalString("type").map { (text: String) throws(ValidationError) in try Validation.notificationType(text) }
        before = try reader.optionalString("before").map { (text: String) throws(ValidationError) in
            guard let time = Timestamp(rfc3339: text) else { throw ValidationError(field: "before", "must be an RFC 3339 date-time") }
            return time
        }
    }
}

/// `POST …/notifications/batch`: an action and 1–1000 notification ids, validated.
public struct BatchRequest: Sendable, Equatable {
    public static let maxIDs = 1000
    public var action: BulkAction
    public var ids: [String]

    public init(json: JSONValue) throws(ValidationError) {
        let reader = try JSONObjectReader(json, allowed: ["action", "ids"])
        let name = try reader.requiredString("action")
        guard let action = BulkAction(rawValue: name) else {
            throw ValidationError(field: "action", "must be one of seen, read, unread, archive, unarchive, delete")
        }
        guard let elements = try reader.optionalArray("ids") else { throw ValidationError(field: "ids", "is required") }
        guard (1...Self.maxIDs).contains(elements.count) else { throw ValidationError(field: "ids", "must hold 1 to \(Self.maxIDs) ids") }
        var ids: [String] = []
        for (index, element) in elements.enumerated() {
            guard case .string(let text) = element else { throw ValidationError(field: "ids[\(index)]", "must be a string") }
            ids.append(try Validation.notificationID(text, field: "ids[\(index)]"))
        }
        self.action = action
        // Repeats change nothing twice (each id is one document).
        var seen: Set<String> = []
        self.ids = ids.filter { seen.insert($0).inserted }
    }
}
