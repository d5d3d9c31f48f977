import CShims
import Glibc
import HangarCore
import HangarSandbox
import Logging
import Synchronization

/// The drone's one TCP port for proxies. A connection starts with an `IngressPreface`
/// line; a missing or wrong one is refused and logged, and no byte of it reaches a backend.
/// After a valid one the connection is held until the backend is ready (a proxy may come
/// before the spawn order, or while the backend starts), within bounds, and the drone
/// answers; then bytes are carried to the backend with splice.
public final class IngressListener: Sendable {
    let drone: Drone
    let secret: [UInt8]
    /// The nonces of accepted prefaces: each opens one connection.
    let replays = ReplayGuard()
    let logger: Logger
    let socket: Int32
    /// The port it listens on (useful when asked for port 0).
    public let port: UInt16
    private let refusals = Mutex<[IngressRefusal]>([])
    /// How long a backend this drone has not heard of may take to appear.
    let appearWithin: Duration
    /// How long a backend may take to be ready.
    let readyWithin: Duration

    /// Listens on `address`:`port` (0: any free port).
    public init(
        drone: Drone, secret: [UInt8], address: String = "127.0.0.1", port: UInt16 = 0,
        appearWithin: Duration = .seconds(5), readyWithin: Duration = .seconds(60), logger: Logger
    ) throws(DroneError) {
        guard secret.count >= 16 else { throw DroneError("the ingress secret must be at least 16 bytes") }
        self.drone = drone
        self.secret = secret
        self.logger = logger
        self.appearWithin = appearWithin
        self.readyWithin = readyWithin
        var bound: UInt16 = 0
        let fd = hg_listen_tcp4(address, port, 512, 0, &bound)
        guard fd >= 0 else {
            throw DroneError(
                fd == -EINVAL
                    ? "ingress address \(address) is not an IPv4 address"
                    : "ingress on \(address):\(port): \(String(cString: strerror(-fd)))")
        }
        socket = fd
        self.port = bound
        guard startThread({ [self] in acceptLoop() }) == 0 else {
            Glibc.close(fd)
            throw DroneError("the ingress accept thread")
        }
    }

    /// The last 100 refusals, oldest first.
    public var refused: [IngressRefusal] { refusals.withLock { $0 } }

    /// Stops accepting (connections being carried go on).
    public func close() {
        shutdown(socket, Int32(SHUT_RDWR))
    }

    private func acceptLoop() {
        while true {
            let client = hg_accept_cloexec(socket)
            if client < 0 {
                switch -client {
                case EINTR, ECONNABORTED: continue
                case EMFILE, ENFILE, ENOBUFS, ENOMEM:
                    // Out of descriptors or memory for now: not a reason to stop listening.
                    logger.warning("ingress accept failed", metadata: ["errno": "\(-client)"])
                    usleep(50_000)
                    continue
                default:
                    Glibc.close(socket)
                    return
                }
            }
            // Connections being admitted (reading a preface, or held until ready) each
            // hold a thread: bounded, so that unauthenticated peers cannot take them all.
            guard admitting.add(1, ordering: .relaxed).newValue <= Self.maxAdmitting else {
                admitting.subtract(1, ordering: .relaxed)
                Glibc.close(client)
                continue
            }
            let started = startThread { [self] in
                admit(client)
                admitting.subtract(1, ordering: .relaxed)
            }
            if started != 0 {
                admitting.subtract(1, ordering: .relaxed)
                Glibc.close(client)
            }
        }
    }

    /// Connections admitted at once, at most.
    static let maxAdmitting = 4096
    private let admitting = Atomic<Int>(0)

    /// Reads the preface (one byte at a time, so that nothing after it is consumed; all of
    /// it within 5 s), checks it, and hands the connection to the backend.
    private func admit(_ client: Int32) {
        let deadline = ContinuousClock.now + .seconds(5)
        var line: [UInt8] = []
        var byte: UInt8 = 0
        var ready = pollfd(fd: client, events: Int16(POLLIN), revents: 0)
        while line.count < 256 {
            let left = deadline - ContinuousClock.now
            guard left > .zero, poll(&ready, 1, Int32(clamping: Self.milliseconds(left))) > 0 else { break }
            let n = read(client, &byte, 1)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 || byte == UInt8(ascii: "\n") { break }
            line.append(byte)
        }
        let result = byte == UInt8(ascii: "\n")
            ? IngressPreface.verify(String(decoding: line, as: UTF8.self), secret: secret, replays: replays)
            : .failure(.malformed)
        switch result {
        case .failure(let refusal):
            refuse(client, refusal, line)
        case .success(let id):
            switch hold(client, for: id) {
            case .failure(let refusal):
                answer(client, IngressPreface.refused(refusal))
                refuse(client, refusal, line, lingering: true)
            case .success(let (backend, upstream)):
                guard answer(client, IngressPreface.accepted) else {
                    Glibc.close(upstream)
                    Glibc.close(client)
                    return
                }
                backend.traffic.carry(client: client, backend: upstream)
            }
        }
    }

    /// Waits, within the bounds, until the backend exists and is ready, and connects to it;
    /// gives up early if the proxy hangs up. A held connection costs a thread that sleeps
    /// in poll(2): until the backend exists it looks again after 1, 2, 4 … ms (at most
    /// every 50 ms), and then it is woken by the backend's own change of status (an
    /// eventfd), or by the proxy hanging up.
    private func hold(_ client: Int32, for id: BackendID) -> Result<(Backend, Int32), IngressRefusal> {
        let clock = ContinuousClock()
        let start = clock.now
        var found = drone.backend(id)
        var pause = 1
        while found == nil {
            let left = appearWithin - (clock.now - start)
            if left <= .zero || proxyLeft(client, within: min(pause, Self.milliseconds(left))) {
                return .failure(.unknownBackend)
            }
            pause = min(pause * 2, 50)
            found = drone.backend(id)
        }
        let backend = found!
        if backend.current.status < .ready {
            let wake = StatusWake()
            defer { wake.close() }
            // The task waits on until the backend's status changes (`reached` cannot be
            // cancelled); by then the wake may be closed, and the signal is dropped.
            Task { [wake] in
                _ = await backend.reached(.ready)
                wake.signal()
            }
            while backend.current.status < .ready {
                let left = readyWithin - (clock.now - start)
                // Without an eventfd (out of descriptors), it looks every 50 ms.
                let sleep = wake.fd >= 0 ? Self.milliseconds(left) : min(Self.milliseconds(left), 50)
                if left <= .zero || proxyLeft(client, within: sleep, or: wake.fd) {
                    return .failure(.notReady)
                }
            }
        }
        if backend.current.status >= .terminating { return .failure(.ended) }
        guard let upstream = try? backend.connect() else {
            return .failure(backend.current.status >= .terminating ? .ended : .unreachable)
        }
        return .success((backend, upstream))
    }

    /// Sleeps until `client` hangs up (true), `wake` is signalled or the time is up (false).
    private func proxyLeft(_ client: Int32, within milliseconds: Int, or wake: Int32 = -1) -> Bool {
        // POLLRDHUP (0x2000) is hidden behind _GNU_SOURCE in Glibc's Swift module.
        let hangup: Int16 = 0x2000 | Int16(POLLHUP | POLLERR)
        var fds = [pollfd(fd: client, events: 0x2000, revents: 0), pollfd(fd: wake, events: Int16(POLLIN), revents: 0)]
        guard poll(&fds, wake >= 0 ? 2 : 1, Int32(clamping: milliseconds)) > 0 else { return false }
        return fds[0].revents & hangup != 0
    }

    /// A wait for poll(2): rounded up, so that a deadline is never woken before.
    static func milliseconds(_ duration: Duration) -> Int { Int(duration.milliseconds) + 1 }

    @discardableResult
    private func answer(_ client: Int32, _ line: String) -> Bool {
        let bytes = Array(line.utf8)
        return bytes.withUnsafeBufferPointer { send(client, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) } == bytes.count
    }

    /// Records and logs a refusal and closes the connection; `lingering` (after an answer):
    /// first lets the proxy read it, since closing with its request unread would reset the
    /// connection, and the reset could overtake the line.
    private func refuse(_ client: Int32, _ refusal: IngressRefusal, _ line: [UInt8], lingering: Bool = false) {
        refusals.withLock { list in
            list.append(refusal)
            if list.count > 100 { list.removeFirst(list.count - 100) }
        }
        logger.warning(
            "ingress connection refused",
            metadata: ["reason": "\(refusal.rawValue)", "preface": "\(String(decoding: line.prefix(80), as: UTF8.self))"])
        if lingering {
            _ = shutdown(client, Int32(SHUT_WR))
            var timeout = timeval(tv_sec: 1, tv_usec: 0)
            setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            var sink = [UInt8](repeating: 0, count: 4096)
            for _ in 0..<16 where read(client, &sink, sink.count) > 0 {}
        }
        Glibc.close(client)
    }
}

extension IngressPreface {
    /// The drone's answer read from a blocking socket a byte at a time (nothing after it is
    /// consumed), as `answer` reads it; nil also when the connection ends first.
    public static func readAnswer(from fd: Int32) -> IngressRefusal?? {
        var line: [UInt8] = []
        var byte: UInt8 = 0
        while line.count < 256 {
            let n = read(fd, &byte, 1)
            if n < 0 && errno == EINTR { continue }
            guard n == 1 else { return nil }
            if byte == 10 { return answer(line) }
            line.append(byte)
        }
        return nil
    }
}

/// An eventfd a task signals when a backend's status changes, for a thread asleep in
/// poll(2). Closed under a lock, so a late signal never writes to a descriptor number the
/// process has reused.
final class StatusWake: Sendable {
    private let descriptor: Mutex<Int32?>
    let fd: Int32

    init() {
        fd = hg_eventfd(1)
        descriptor = Mutex(fd >= 0 ? fd : nil)
    }

    func signal() {
        descriptor.withLock { fd in
            guard let fd else { return }
            var one: UInt64 = 1
            _ = write(fd, &one, 8)
        }
    }

    func close() {
        descriptor.withLock { fd in
            if let open = fd { Glibc.close(open) }
            fd = nil
        }
    }
}
