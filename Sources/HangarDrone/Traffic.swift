import CShims
import Glibc
import HangarCore
import HangarSandbox
import Synchronization

/// A backend's connections: how many are open, and when bytes last moved. Idle shutdown
/// reads both.
public final class Traffic: Sendable {
    private let open = Atomic<Int>(0)
    /// CLOCK_MONOTONIC nanoseconds of the last transfer or connection change; written by
    /// the C pump's threads, read with relaxed atomics.
    private let activityCell: UnsafeSendablePointer
    private var activity: UnsafeMutablePointer<Int64> { activityCell.pointer }

    public init() {
        let cell = UnsafeMutablePointer<Int64>.allocate(capacity: 1)
        cell.initialize(to: Self.monotonicNanoseconds())
        activityCell = UnsafeSendablePointer(cell)
    }

    deinit { activity.deallocate() }

    /// Connections open now.
    public var openConnections: Int { open.load(ordering: .relaxed) }

    /// How long since bytes last moved or a connection opened or closed.
    public var idleFor: Duration {
        let last = hg_atomic_load_i64(activity)
        return .nanoseconds(max(0, Self.monotonicNanoseconds() - last))
    }

    /// Carries bytes both ways between `client` and `backend` (both owned from now on)
    /// with splice, each direction on a thread of its own; closes both at the end.
    public func carry(client: Int32, backend: Int32) {
        open.add(1, ordering: .relaxed)
        touch()
        let finished = Atomic<Int>(0)
        let done: @Sendable () -> Void = { [self] in
            // The second direction to finish closes both sockets.
            if finished.add(1, ordering: .acquiringAndReleasing).newValue == 2 {
                close(client)
                close(backend)
                open.subtract(1, ordering: .relaxed)
                touch()
            }
        }
        let pointer = activityCell
        // Set by the first direction to finish; the other then stops after 60 silent seconds.
        let oneDone = UnsafeSendableFlag()
        for (from, to) in [(client, backend), (backend, client)] {
            let started = startThread {
                _ = hg_splice_one_way(from, to, pointer.pointer, oneDone.pointer)
                done()
                oneDone.release()
            }
            if started != 0 {
                done()
                oneDone.release()
            }
        }
    }

    func touch() {
        hg_atomic_store_i64(activity, Self.monotonicNanoseconds())
    }

    static func monotonicNanoseconds() -> Int64 {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return Int64(now.tv_sec) * 1_000_000_000 + Int64(now.tv_nsec)
    }
}

/// A raw pointer that the C pump writes and Swift reads with relaxed atomics.
struct UnsafeSendablePointer: @unchecked Sendable {
    let pointer: UnsafeMutablePointer<Int64>
    init(_ pointer: UnsafeMutablePointer<Int64>) { self.pointer = pointer }
}

/// An int the two pump threads share (the first to finish sets it); freed by the second.
final class UnsafeSendableFlag: @unchecked Sendable {
    let pointer: UnsafeMutablePointer<Int32>
    private let users = Atomic<Int>(2)

    init() {
        pointer = .allocate(capacity: 1)
        pointer.initialize(to: 0)
    }

    func release() {
        if users.subtract(1, ordering: .acquiringAndReleasing).newValue == 0 { pointer.deallocate() }
    }
}
