internal import NotificationsCore

/// Strict query-parameter parsing: a present but bad value is a 400 naming the parameter.
enum QueryParameters {
    static func integer(_ text: String?, name: String, default fallback: Int, in range: ClosedRange<Int>) throws(ValidationError) -> Int {
        guard let text else { return fallback }
        guard let value = Int(text), range.contains(value) else {
            throw ValidationError(field: name, "must be an integer from \(range.lowerBound) to \(range.upperBound)")
        }
        return value
    }

    static func bool(_ text: String?, name: String, default fallback: Bool) throws(ValidationError) -> Bool {
        switch text {
        case nil: fallback
        case "true": true
        case "false": false
        default: throw ValidationError(field: name, "must be true or false")
        }
    }

    /// One of an enumeration's raw values.
    static func choice<Value: RawRepresentable & CaseIterable>(_ text: String?, name: String, default fallback: Value) throws(ValidationError) -> Value
    where Value.RawValue == String {
        guard let text else { return fallback }
        guard let value = Value(rawValue: text) else {
            throw ValidationError(field: name, "must be one of \(Value.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        return value
    }
}
