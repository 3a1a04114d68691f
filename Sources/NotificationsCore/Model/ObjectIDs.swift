internal import MongoStore

/// Notification ids: time-ordered ObjectIds (see `ObjectID.generate`), as 24 lower-case hex digits.
enum ObjectIDs {
    static func new(at time: Timestamp) -> String {
        ObjectID.generate(milliseconds: time.milliseconds).description
    }
}
