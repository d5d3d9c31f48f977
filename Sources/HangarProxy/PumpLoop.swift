import CShims
import Glibc
import HangarCore
import Synchronization

/// One epoll loop on a thread of its own: it accepts connections from the shared listener
/// (EPOLLEXCLUSIVE: one loop wakes per connection) and drives the relays it accepted. A
/// relay lives on one loop for its whole life, so a relay's state needs no lock; other
/// threads reach a loop only through `post`.
final class PumpLoop: @unchecked Sendable {
    /// epoll data of the listener and the wake-up eventfd; a relay's fds use id << 2 | side.
    static let listenerTag: UInt64 = 0
    static let wakeTag: UInt64 = 1
    static let clientSide: UInt64 = 2
    static let upstreamSide: UInt64 = 3

    let core: ProxyCore
    let epoll: Int32
    let wake: Int32
    let listener: Int32
    /// Jobs for the loop; nil once the loop has ended (its eventfd is closed under the same
    /// lock, so a late post never writes to a reused descriptor).
    private let inbox = Mutex<[@Sendable () -> Void]?>([])
    private let stopping = Atomic<Bool>(false)
    private let finished = Mutex<CheckedContinuation<Void, Never>?>(nil)
    private let ended = Atomic<Bool>(false)

    // Loop-confined.
    var relays: [UInt64: Relay] = [:]
    /// Relays that have more to do without a new event (they moved their share and yielded).
    var again: [Relay] = []
    var nextID: UInt64 = 1
    /// A scratch buffer for peeks: one relay at a time uses it.
    let scratch: UnsafeMutablePointer<UInt8>
    let scratchSize: Int
    private var lastSweep = ContinuousClock.now
    /// The time read once per wake-up: what relays measure their deadlines from.
    private(set) var now = ContinuousClock.now

    init(core: ProxyCore, listener: Int32) throws(ProxyError) {
        self.core = core
        self.listener = listener
        scratchSize = max(core.configuration.headLimits.maxBytes + 1, 16 * 1024)
        scratch = .allocate(capacity: scratchSize)
        let epoll = hg_epoll_create()
        guard epoll >= 0 else { throw ProxyError("epoll_create1: \(String(cString: strerror(-epoll)))") }
        let wake = hg_eventfd(1)
        guard wake >= 0 else {
            close(epoll)
            throw ProxyError("eventfd: \(String(cString: strerror(-wake)))")
        }
        self.epoll = epoll
        self.wake = wake
        guard hg_epoll_add(epoll, wake, hg_epoll_in | hg_epoll_et, Self.wakeTag) == 0,
            hg_epoll_add(epoll, listener, hg_epoll_in | hg_epoll_exclusive, Self.listenerTag) == 0
        else {
            close(epoll)
            close(wake)
            throw ProxyError("epoll_ctl on the listener: \(String(cString: strerror(errno)))")
        }
    }

    deinit {
        scratch.deallocate()
    }

    /// Runs `job` on the loop's thread, soon.
    func post(_ job: @escaping @Sendable () -> Void) {
        inbox.withLock { jobs in
            guard jobs != nil else { return }
            jobs!.append(job)
            var one: UInt64 = 1
            _ = write(wake, &one, 8)
        }
    }

    /// Asks the loop to close every relay and end; returns once it has.
    func stop() async {
        await withCheckedContinuation { continuation in
            let done = finished.withLock { slot -> Bool in
                if ended.load(ordering: .acquiring) { return true }
                slot = continuation
                return false
            }
            if done { return continuation.resume() }
            stopping.store(true, ordering: .releasing)
            post {}
        }
    }

    /// The loop thread's id (0 until it runs), for its CPU time in /proc.
    let threadID = Atomic<Int32>(0)

    /// The thread's body.
    func run() {
        threadID.store(hg_thread_id(), ordering: .relaxed)
        var events = [hg_event](repeating: hg_event(), count: 256)
        while !stopping.load(ordering: .acquiring) {
            let timeout: Int32 = again.isEmpty ? 250 : 0
            let count = events.withUnsafeMutableBufferPointer { hg_epoll_wait(epoll, $0.baseAddress, 256, timeout) }
            if count < 0 && count != -EINTR { break }
            now = .now
            for index in 0..<max(0, Int(count)) {
                let tag = events[index].data
                switch tag {
                case Self.listenerTag: acceptAll()
                case Self.wakeTag: runInbox()
                default:
                    relays[tag >> 2]?.drive()
                }
            }
            if !again.isEmpty {
                let due = again
                again.removeAll(keepingCapacity: true)
                for relay in due { relay.drive() }
            }
            if now - lastSweep >= .milliseconds(250) {
                lastSweep = now
                for relay in relays.values { relay.checkDeadline(now) }
            }
        }
        for relay in Array(relays.values) { relay.close() }
        runInbox()
        inbox.withLock { jobs in
            jobs = nil
            close(wake)
        }
        close(epoll)
        ended.store(true, ordering: .releasing)
        finished.withLock { $0.take() }?.resume()
    }

    private func runInbox() {
        var drained: UInt64 = 0
        _ = read(wake, &drained, 8)
        let jobs = inbox.withLock { jobs -> [@Sendable () -> Void] in
            defer { jobs?.removeAll(keepingCapacity: true) }
            return jobs ?? []
        }
        for job in jobs { job() }
    }

    private func acceptAll() {
        var peer = [CChar](repeating: 0, count: 64)
        for _ in 0..<64 {
            let fd = peer.withUnsafeMutableBufferPointer { hg_accept_nonblocking(listener, $0.baseAddress, 64) }
            if fd < 0 {
                if fd == -EINTR || fd == -ECONNABORTED { continue }
                if fd == -EMFILE || fd == -ENFILE { core.metrics.add(.acceptFailures) }
                return
            }
            guard relays.count < core.configuration.maxConnectionsPerLoop else {
                core.metrics.add(.refusedConnections)
                hg_close_reset(fd)
                continue
            }
            let id = nextID
            nextID += 1
            let relay = Relay(id: id, client: fd, peer: String(cString: peer), loop: self)
            relays[id] = relay
            core.metrics.add(.connections)
            guard watch(fd, side: Self.clientSide, of: id) else {
                relay.close()
                continue
            }
            relay.drive()
        }
    }

    /// Edge-triggered interest in everything: a relay tries until EAGAIN on each event.
    func watch(_ fd: Int32, side: UInt64, of id: UInt64) -> Bool {
        hg_epoll_add(epoll, fd, hg_epoll_in | hg_epoll_out | hg_epoll_rdhup | hg_epoll_et, id << 2 | side) == 0
    }

    func forget(_ relay: Relay) {
        relays[relay.id] = nil
    }
}

/// A proxy failed to start or was given a bad setting; the message says what and why.
public struct ProxyError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}
