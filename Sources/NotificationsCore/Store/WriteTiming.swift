/// The time bounds of readers that must find every committed write, derived from the
/// configured MongoDB deadline in this one place (rather than as constants in each reader).
///
/// A notification's id holds the time it was planned, just before its insert was sent; the
/// insert commits within the write's deadline or its client is told it failed (a create that
/// a frozen server applies later is deleted again; a fan-out batch is resumed and published
/// then). Ids are made by several instances, whose clocks differ by up to `clockSkew`.
public struct WriteTiming: Sendable, Equatable {
    /// `MONGODB_OPERATION_TIMEOUT_MS`.
    public var writeDeadline: Duration

    public init(writeDeadline: Duration) {
        self.writeDeadline = writeDeadline
    }

    /// How far two instances' wall clocks may be apart (NTP keeps them far closer).
    public static let clockSkew = Duration.seconds(1)
    /// The contract's least look-back for resumes and polls.
    public static let minimumLookBack = Duration.seconds(5)

    /// The deadlines between a write's announcement on its counters and its settle: the write
    /// itself (its one budget, which the announcement also came out of), then the settle
    /// (counters a fan-out batch's `$inc` needs are created before the write, so no find or
    /// insert comes in between).
    public static let callsAfterCommit = 2

    /// How long a counter's `seq` must stay unchanged before a recount of it is trusted (every
    /// `$inc` of a write the recount counted has landed by then), and how old an announcement
    /// must be before any instance resolves it (its writer has settled or given up by then)
    /// (`UserCounters`).
    public var counterSettle: Duration {
        writeDeadline * Self.callsAfterCommit + Self.clockSkew
    }

    /// Between the two stale marks that resolve a write of unknown outcome, as any instance
    /// measures it: once MongoDB answers again, what a frozen server had received lands within
    /// a second, so the second mark follows every late effect of the write.
    public static let confirmationGap = Duration.seconds(1) + clockSkew

    /// How far before a reader's previous look a new look must start so that nothing committed
    /// in between is missed: an id's time is at most a deadline (plus skew) before its commit.
    public var lookBack: Duration {
        max(Self.minimumLookBack, writeDeadline + Self.clockSkew)
    }
}
