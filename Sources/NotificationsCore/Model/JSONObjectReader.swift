/// Reads a request body object field by field, rejecting unknown fields and wrong types
/// with a `ValidationError` that names the field.
public struct JSONObjectReader {
    private let members: [String: JSONValue]
    private let prefix: String

    /// - Parameters:
    ///   - allowed: every field the endpoint accepts; any other is an error.
    ///   - prefix: for a nested object, the path to it, so errors name `audience.userIds`.
    public init(_ value: JSONValue, allowed: Set<String>, prefix: String = "") throws(ValidationError) {
        guard case .object(let members) = value else {
            throw ValidationError(field: prefix.isEmpty ? "$" : String(prefix.dropLast()), "must be a JSON object")
        }
        if let unknown = members.keys.sorted().first(where: { !allowed.contains($0) }) {
            throw ValidationError(field: prefix + unknown, "is not a known field")
        }
        self.members = members
        self.prefix = prefix
    }

    public func requiredString(_ name: String) throws(ValidationError) -> String {
        guard let value = try optionalString(name) else { throw ValidationError(field: prefix + name, "is required") }
        return value
    }

    /// A string, or nil when absent or JSON null.
    public func optionalString(_ name: String) throws(ValidationError) -> String? {
        switch members[name] {
        case nil, .null?: return nil
        case .string(let text)?: return text
        case let other?: throw ValidationError(field: prefix + name, "must be a string, not \(other.typeName)")
        }
    }

    public func optionalArray(_ name: String) throws(ValidationError) -> [JSONValue]? {
        switch members[name] {
        case nil, .null?: return nil
        case .array(let elements)?: return elements
        case let other?: throw ValidationError(field: prefix + name, "must be an array, not \(other.typeName)")
        }
    }

    public func has(_ name: String) -> Bool { members[name] != nil }

    /// The raw value of a field (nil when absent), for types read case by case.
    public func value(_ name: String) -> JSONValue? { members[name] }

    public func optionalObject(_ name: String) throws(ValidationError) -> [String: JSONValue]? {
        switch members[name] {
        case nil, .null?: return nil
        case .object(let object)?: return object
        case let other?: throw ValidationError(field: prefix + name, "must be an object, not \(other.typeName)")
        }
    }
}

extension NewNotification {
    static let fields: Set<String> = ["recipientId", "type", "actorId", "title", "body", "data", "expiresAt"]

    /// Validates a `POST /v1/notifications` body (`now` judges `expiresAt`).
    public init(json: JSONValue, now: Timestamp = SystemWallClock().now()) throws(ValidationError) {
        let reader = try JSONObjectReader(json, allowed: Self.fields)
        let recipientId = try Validation.userID(reader.requiredString("recipientId"), field: "recipientId")
        let type = try Validation.notificationType(reader.requiredString("type"))
        let actorId = try reader.optionalString("actorId").map { (id: String) throws(ValidationError) in try Validation.userID(id, field: "actorId") }
        let title = try reader.optionalString("title").map { (text: String) throws(ValidationError) in
            try Validation.text(text, field: "title", maxLength: Validation.maxTitleLength)
        }
        let body = try reader.optionalString("body").map { (text: String) throws(ValidationError) in
            try Validation.text(text, field: "body", maxLength: Validation.maxBodyLength)
        }
        var data = JSONWriter()
        data.value(.object(try reader.optionalObject("data") ?? [:]))
        guard data.bytes.count <= Validation.maxDataBytes else {
            throw ValidationError(field: "data", "must be at most \(Validation.maxDataBytes) bytes as JSON")
        }
        let expiresAt = try reader.optionalString("expiresAt").map { (text: String) throws(ValidationError) in try Validation.expiry(text, now: now) }
        self.init(recipientId: recipientId, type: type, actorId: actorId, title: title, body: body, dataJSON: data.string, expiresAt: expiresAt)
    }
}
