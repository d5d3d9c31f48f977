import Glibc

/// The system's real-time clock in milliseconds since the Unix epoch: what SQLite's 'now'
/// reads, and what token expiries and lease times are counted in.
public func wallClockMilliseconds() -> Int64 {
    var time = timespec()
    clock_gettime(CLOCK_REALTIME, &time)
    return Int64(time.tv_sec) * 1000 + Int64(time.tv_nsec) / 1_000_000
}

extension Duration {
    /// Whole milliseconds (rounded down).
    public var milliseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1000 + attoseconds / 1_000_000_000_000_000
    }
}
