/// Whole units of a `Duration`, for the integer fields of Redis commands, headers and metrics.
extension Duration {
    /// Truncated towards zero.
    var milliseconds: Int64 { whole(perSecond: 1_000) }
    var microseconds: Int64 { whole(perSecond: 1_000_000) }
    var nanoseconds: Int64 { whole(perSecond: 1_000_000_000) }

    /// Seconds, rounded up (a fraction of a second still counts as one).
    var wholeSecondsRoundedUp: Int {
        let (seconds, attoseconds) = components
        return Int(seconds) + (attoseconds > 0 ? 1 : 0)
    }

    private func whole(perSecond units: Int64) -> Int64 {
        let (seconds, attoseconds) = components
        return seconds * units + attoseconds / (1_000_000_000_000_000_000 / units)
    }
}
