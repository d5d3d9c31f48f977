import Glibc
import HangarCore
import Synchronization

/// Threads for blocking work, so that it never holds one of Swift's cooperative threads
/// (as many as cores): a spawn waits for its child's setup, a readiness probe for a reply.
/// Threads are started as work arrives, up to `limit`, and wait for more when idle.
public final class BlockingPool: Sendable {
    /// The process's pool.
    public static let shared = BlockingPool(limit: 64)

    private struct State {
        var jobs: [@Sendable () -> Void] = []
        var idle = 0
        var threads = 0
    }

    private let limit: Int
    private let state = Mutex(State())
    /// Counts queued jobs; an idle thread waits on it.
    private let queued: SemaphoreCell

    public init(limit: Int) {
        self.limit = max(1, limit)
        queued = SemaphoreCell()
    }

    /// Runs `body` on a pool thread and returns its result.
    public func run<T: Sendable, E: Error>(_ body: @escaping @Sendable () throws(E) -> T) async throws(E) -> T {
        let result: Result<T, E> = await withCheckedContinuation { continuation in
            submit { continuation.resume(returning: Result { () throws(E) -> T in try body() }) }
        }
        return try result.get()
    }

    /// Queues `job`; a thread is started when none is idle for it.
    public func submit(_ job: @escaping @Sendable () -> Void) {
        let start = state.withLock { state -> Bool in
            state.jobs.append(job)
            guard state.idle < state.jobs.count, state.threads < limit else { return false }
            state.threads += 1
            return true
        }
        if start && startThread({ self.serve() }) != 0 {
            let alone = state.withLock { state in
                state.threads -= 1
                return state.threads == 0
            }
            if alone {
                // No thread at all: run it here rather than never.
                state.withLock { $0.jobs.removeFirst() }()
                return
            }
        }
        sem_post(queued.pointer)
    }

    private func serve() {
        while true {
            state.withLock { $0.idle += 1 }
            while sem_wait(queued.pointer) != 0 {}
            let job = state.withLock { state -> @Sendable () -> Void in
                state.idle -= 1
                return state.jobs.removeFirst()
            }
            job()
        }
    }
}

/// A POSIX semaphore at a fixed address.
private final class SemaphoreCell: @unchecked Sendable {
    let pointer = UnsafeMutablePointer<sem_t>.allocate(capacity: 1)
    init() { sem_init(pointer, 0, 0) }
    deinit {
        sem_destroy(pointer)
        pointer.deallocate()
    }
}
