import CShims
import Glibc
import HangarCore
import Synchronization

/// One epoll loop on a thread of its own: it accepts connections from the shared listener
/// (EPOLLEXCLUSIVE: one loop wakes per connection), hands each to the loop with the fewest
/// connections (itself on a tie), and drives the relays it was given. A relay lives on one
/// loop for its whole life, so a relay's state needs no lock; other threads reach a loop
/// only through `post`.
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
    /// Its connections, counted when a loop decides to hand it one: what the acceptor
    /// balances by. (The kernel wakes the first idle loop for a connection, so without
    /// this a burst lands on one loop.)
    let load = Atomic<Int>(0)
    /// Every loop of the proxy, this one included (unowned: the proxy owns them); set
    /// before the threads start.
    var peers: [Peer] = []

    struct Peer {
        unowned let loop: PumpLoop
    }

    // Loop-confined.
    var relays: [UInt64: Relay] = [:]
    /// Relays that have more to do without a new event (they moved their share and yielded).
    var again: [Relay] = []
    var nextID: UInt64 = 1
    /// A scratch buffer for peeks: one relay at a time uses it.
    let scratch: UnsafeMutablePointer<UInt8>
    let scratchSize: Int
    private var lastSweep = ContinuousClock.now
    /// While out of file descriptors, the listener is out of the epoll set until then.
    private var acceptsResume: ContinuousClock.Instant?
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

    /// Runs `job` on the loop's thread, soon; false if the loop has ended (the job will
    /// never run).
    @discardableResult
    func post(_ job: @escaping @Sendable () -> Void) -> Bool {
        inbox.withLock { jobs in
            guard jobs != nil else { return false }
            jobs!.append(job)
            var one: UInt64 = 1
            _ = write(wake, &one, 8)
            return true
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
            if let resume = acceptsResume, now >= resume {
                acceptsResume = nil
                _ = hg_epoll_add(epoll, listener, hg_epoll_in | hg_epoll_exclusive, Self.listenerTag)
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

    /// Accepts what is waiting (at most 64 at a time) and gives each connection to the
    /// loop with the fewest.
    private func acceptAll() {
        var peer = [CChar](repeating: 0, count: 64)
        for _ in 0..<64 {
            let fd = peer.withUnsafeMutableBufferPointer { hg_accept_nonblocking(listener, $0.baseAddress, 64) }
            if fd < 0 {
                if fd == -EINTR || fd == -ECONNABORTED { continue }
                if fd == -EMFILE || fd == -ENFILE {
                    // Out of descriptors: the listener stays readable, so it would wake this
                    // loop at once, again and again. It is set aside for 100 ms instead.
                    core.metrics.add(.acceptFailures)
                    _ = hg_epoll_remove(epoll, listener)
                    acceptsResume = now + .milliseconds(100)
                }
                return
            }
            let address = String(cString: peer)
            var least = self
            for peer in peers where peer.loop.load.load(ordering: .relaxed) < least.load.load(ordering: .relaxed) {
                least = peer.loop
            }
            let target = least
            target.load.add(1, ordering: .relaxed)
            if target === self {
                adopt(fd, peer: address)
            } else if !target.post({ target.adopt(fd, peer: address) }) {
                target.load.subtract(1, ordering: .relaxed)
                hg_close_reset(fd)
            }
        }
    }

    /// Takes a connection this loop was given (its `load` already counts it).
    func adopt(_ fd: Int32, peer: String) {
        guard !stopping.load(ordering: .acquiring), relays.count < core.configuration.maxConnectionsPerLoop else {
            core.metrics.add(.refusedConnections)
            load.subtract(1, ordering: .relaxed)
            hg_close_reset(fd)
            return
        }
        let id = nextID
        nextID += 1
        let relay = Relay(id: id, client: fd, peer: peer, loop: self)
        relays[id] = relay
        core.metrics.add(.connections)
        guard watch(fd, side: Self.clientSide, of: id) else {
            relay.close()
            return
        }
        relay.drive()
    }

    /// Edge-triggered interest in everything: a relay tries until EAGAIN on each event.
    func watch(_ fd: Int32, side: UInt64, of id: UInt64) -> Bool {
        hg_epoll_add(epoll, fd, hg_epoll_in | hg_epoll_out | hg_epoll_rdhup | hg_epoll_et, id << 2 | side) == 0
    }

    func forget(_ relay: Relay) {
        guard relays.removeValue(forKey: relay.id) != nil else { return }
        load.subtract(1, ordering: .relaxed)
    }
}

/// A proxy failed to start or was given a bad setting; the message says what and why.
public struct ProxyError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}
