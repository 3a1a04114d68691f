/// A user's notification preferences: muted types and channels.
public struct Preferences: Sendable, Equatable {
    public static let maxMutedTypes = 100

    /// Distinct types, in the order first given.
    public var mutedTypes: [String]
    public var inApp: Bool
    public var email: Bool
    public var push: Bool
    public var updatedAt: Timestamp?

    public init(mutedTypes: [String] = [], inApp: Bool = true, email: Bool = true, push: Bool = true, updatedAt: Timestamp? = nil) {
        self.mutedTypes = mutedTypes
        self.inApp = inApp
        self.email = email
        self.push = push
        self.updatedAt = updatedAt
    }

    /// What a user who never set preferences gets.
    public static let defaults = Preferences()

    /// Why a notification of `type` is not delivered in-app to this user, if it is not.
    /// `in_app_disabled` wins over `muted_type` (the user turned the whole channel off).
    public func suppression(of type: String) -> Suppression? {
        if !inApp { return .inAppDisabled }
        return mutedTypes.contains(type) ? .mutedType : nil
    }

    public enum Suppression: String, Sendable {
        case mutedType = "muted_type"
        case inAppDisabled = "in_app_disabled"
    }

    /// `{"mutedTypes": [...], "channels": {"in_app", "email", "push"}, "updatedAt"}`.
    public func write(to json: inout JSONWriter) {
        json.object { object in
            object.array("mutedTypes", mutedTypes) { json, type in json.string(type) }
            object.object("channels") { channels in
                channels.bool("in_app", inApp)
                channels.bool("email", email)
                channels.bool("push", push)
            }
            object.string("updatedAt", updatedAt?.rfc3339)
        }
    }

    public var json: [UInt8] {
        var writer = JSONWriter()
        write(to: &writer)
        return writer.bytes
    }

    static let fields: Set<String> = ["mutedTypes", "channels"]
    static let channelNames: Set<String> = ["in_app", "email", "push"]

    /// Validates a `PUT /v1/users/{userId}/preferences` body. Absent fields keep their defaults;
    /// repeated muted types are dropped (first occurrence kept).
    public init(json: JSONValue) throws(ValidationError) {
        let reader = try JSONObjectReader(json, allowed: Self.fields)
        var muted: [String] = []
        switch try reader.optionalArray("mutedTypes") {
        case nil: break
        case let values?:
            var seen = Set<String>()
            for (index, value) in values.enumerated() {
                guard case .string(let text) = value else { throw ValidationError(field: "mutedTypes[\(index)]", "must be a string") }
                let type = try Validation.notificationType(text, field: "mutedTypes[\(index)]")
                if seen.insert(type).inserted { muted.append(type) }
            }
            guard muted.count <= Self.maxMutedTypes else {
                throw ValidationError(field: "mutedTypes", "must hold at most \(Self.maxMutedTypes) distinct types")
            }
        }
        var flags: [String: Bool] = [:]
        if let channels = try reader.optionalObject("channels") {
            for (name, value) in channels.sorted(by: { $0.key < $1.key }) {
                guard Self.channelNames.contains(name) else { throw ValidationError(field: "channels.\(name)", "is not a known channel (in_app, email, push)") }
                guard case .bool(let flag) = value else { throw ValidationError(field: "channels.\(name)", "must be true or false") }
                flags[name] = flag
            }
        }
        self.init(mutedTypes: muted, inApp: flags["in_app"] ?? true, email: flags["email"] ?? true, push: flags["push"] ?? true)
    }
}
