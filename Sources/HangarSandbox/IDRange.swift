import Glibc
import Synchronization

/// A range of host uids and gids that one sandbox's user namespace maps onto 0…count-1.
/// Ranges are taken from [2^30, 2^32) in slots of 65536 and held with an flock on a
/// slot file, so concurrent processes (several `hangar run`, a drone) never share one;
/// a holder that dies releases its slot with its fd.
final class IDRange: Sendable {
    let hostBase: UInt32
    let count: UInt32
    private let lockFD: Int32

    static let slotSize: UInt32 = 65536
    static let firstSlot: UInt32 = 1 << 14  // host uid 2^30
    static let slotCount: UInt32 = (1 << 16) - firstSlot - 1

    private init(hostBase: UInt32, count: UInt32, lockFD: Int32) {
        self.hostBase = hostBase
        self.count = count
        self.lockFD = lockFD
    }

    /// "0 BASE COUNT\n", for uid_map and gid_map.
    var mapText: String { "0 \(hostBase) \(count)\n" }

    deinit { close(lockFD) }

    /// Takes a free slot, trying random ones first.
    static func acquire(lockDirectory: String) throws(SandboxError) -> IDRange {
        var generator = SystemRandomNumberGenerator()
        let start = UInt32.random(in: 0..<slotCount, using: &generator)
        for attempt in 0..<slotCount {
            let slot = firstSlot + (start + attempt) % slotCount
            let path = "\(lockDirectory)/\(slot)"
            let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o600)
            guard fd >= 0 else { throw .system(.host, "opening the id slot lock \(path)", errno: errno) }
            if flock(fd, LOCK_EX | LOCK_NB) == 0 {
                return IDRange(hostBase: slot * slotSize, count: slotSize, lockFD: fd)
            }
            close(fd)
            if attempt > 64 && errno != EWOULDBLOCK { break }
        }
        throw SandboxError(.host, "no free uid range in \(lockDirectory)")
    }
}

/// Uid ranges this process holds, recycled from ended sandboxes to new ones: taking a
/// fresh slot costs a file open and an flock, a recycled one nothing. A range is only
/// recycled once its sandbox's init has been reaped, so no process of the old sandbox is
/// left, and everything it wrote lived in its own tmpfs.
final class IDRangePool: Sendable {
    private let lockDirectory: String
    private let free = Mutex<[IDRange]>([])
    private static let keep = 64

    init(lockDirectory: String) { self.lockDirectory = lockDirectory }

    func acquire() throws(SandboxError) -> IDRange {
        if let recycled = free.withLock({ $0.popLast() }) { return recycled }
        return try IDRange.acquire(lockDirectory: lockDirectory)
    }

    func release(_ range: IDRange) {
        free.withLock { ranges in
            if ranges.count < Self.keep { ranges.append(range) }
        }
    }
}
