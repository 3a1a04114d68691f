/// One notification in a user's feed.
public struct Notification: Sendable, Equatable {
    /// 24-hex ObjectId; its first six bytes are the creation time in milliseconds.
    public var id: String
    public var recipientId: String
    public var type: String
    public var actorId: String?
    public var title: String?
    public var body: String?
    /// The `data` object as compact JSON text, stored and returned verbatim.
    public var dataJSON: String
    public var createdAt: Timestamp
    public var readAt: Timestamp?
    /// Shown to its user (the bell was opened); `read` sets it too when it was nil.
    public var seenAt: Timestamp?
    /// Put away: out of the feed's default view and of the unread, unseen and total counts.
    public var archivedAt: Timestamp?
    /// Gone from reads from this moment on (and removed soon after).
    public var expiresAt: Timestamp?

    public init(
        id: String, recipientId: String, type: String, actorId: String?, title: String?, body: String?, dataJSON: String,
        createdAt: Timestamp, readAt: Timestamp?, seenAt: Timestamp? = nil, archivedAt: Timestamp? = nil, expiresAt: Timestamp? = nil
    ) {
        self.id = id
        self.recipientId = recipientId
        self.type = type
        self.actorId = actorId
        self.title = title
        self.body = body
        self.dataJSON = dataJSON
        self.createdAt = createdAt
        self.readAt = readAt
        self.seenAt = seenAt
        self.archivedAt = archivedAt
        self.expiresAt = expiresAt
    }

    /// The contract's JSON shape: `{"id", "recipientId", "type", "actorId", "title", "body", "data", "createdAt", "readAt",
    /// "seenAt", "archivedAt", "expiresAt"}`.
    public func write(to json: inout JSONWriter) {
        json.object { object in
            object.string("id", id)
            object.string("recipientId", recipientId)
            object.string("type", type)
            object.string("actorId", actorId)
            object.string("title", title)
            object.string("body", body)
            object.rawJSON("data", dataJSON)
            object.string("createdAt", createdAt.rfc3339)
            object.string("readAt", readAt?.rfc3339)
            object.string("seenAt", seenAt?.rfc3339)
            object.string("archivedAt", archivedAt?.rfc3339)
            object.string("expiresAt", expiresAt?.rfc3339)
        }
    }
}

/// What a client asks to create; validated before it becomes a `Notification`.
public struct NewNotification: Sendable, Equatable {
    public var recipientId: String
    public var type: String
    public var actorId: String?
    public var title: String?
    public var body: String?
    public var dataJSON: String
    public var expiresAt: Timestamp?

    public init(
        recipientId: String, type: String, actorId: String? = nil, title: String? = nil, body: String? = nil, dataJSON: String = "{}",
        expiresAt: Timestamp? = nil
    ) {
        self.expiresAt = expiresAt
        self.recipientId = recipientId
        self.type = type
        self.actorId = actorId
        self.title = title
        self.body = body
        self.dataJSON = dataJSON
    }
}
