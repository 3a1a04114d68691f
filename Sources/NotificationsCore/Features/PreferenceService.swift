internal import MongoStore

/// Users' preferences: read through the feed cache (versioned per user, so a `PUT` is seen by
/// every instance the moment it returns), written to MongoDB, and looked up for a whole
/// fan-out batch in one Redis round trip plus one MongoDB query for the misses.
public struct PreferenceService: Sendable {
    let store: PreferenceStore
    let cache: FeedCache
    let clock: any WallClock

    static let variant = "prefs"

    public init(store: PreferenceStore, cache: FeedCache, clock: any WallClock = SystemWallClock()) {
        self.store = store
        self.cache = cache
        self.clock = clock
    }

    /// `GET /v1/users/{userId}/preferences`: the stored value or the defaults, as JSON.
    public func get(user: String) async throws -> CachedJSON {
        try await cache.cached(user: user, variant: Self.variant) { [store] in try await store.load(user: user).json }
    }

    /// The cache lookup `get` will make.
    public func probe(user: String) -> CacheProbe? {
        cache.probe(user: user, variant: Self.variant)
    }

    /// `PUT`: stored, then the user's cached entries dropped (mutes apply at once everywhere).
    public func put(user: String, _ preferences: Preferences) async throws -> Preferences {
        do {
            let stored = try await store.save(user: user, preferences, at: clock.now())
            await cache.invalidate(user: user)
            return stored
        } catch {
            // The write's outcome may be unknown: drop cached entries anyway.
            await cache.invalidate(user: user)
            throw error
        }
    }

    /// Preferences of many users: cached entries, then one MongoDB query for the rest (which
    /// are then cached under the version they were read with).
    public func lookup(users: [String]) async throws -> [String: Preferences] {
        guard let cached = await cache.lookupMany(users: users, variant: Self.variant) else {
            return try await store.load(users: users)
        }
        var found: [String: Preferences] = [:]
        var missing: [(user: String, version: String)] = []
        for (user, entry) in zip(users, cached) {
            if let body = entry.body, let preferences = Preferences(cached: body) {
                found[user] = preferences
            } else {
                missing.append((user, entry.version))
            }
        }
        guard !missing.isEmpty else { return found }
        let loaded = try await store.load(users: missing.map(\.user))
        var fills: [(user: String, version: String, body: [UInt8])] = []
        for (user, version) in missing {
            let preferences = loaded[user] ?? .defaults
            found[user] = preferences
            fills.append((user, version, preferences.json))
        }
        await cache.storeMany(fills, variant: Self.variant)
        return found
    }
}

extension Preferences {
    /// Reads the JSON this type writes (the cached copy); `updatedAt` is not needed to decide delivery.
    init?(cached bytes: [UInt8]) {
        guard case .object(let members)? = try? JSONValue.parse(bytes), case .array(let muted)? = members["mutedTypes"],
            case .object(let channels)? = members["channels"]
        else { return nil }
        func flag(_ name: String) -> Bool { if case .bool(let value)? = channels[name] { value } else { true } }
        self.init(
            mutedTypes: muted.compactMap { if case .string(let type) = $0 { type } else { nil } }, inApp: flag("in_app"), email: flag("email"),
            push: flag("push"))
    }
}
