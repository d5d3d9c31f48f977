import CShims
import Glibc
import HangarCore
import HangarSandbox
import Logging
import Synchronization

/// The first line of a connection to a drone's ingress port: which backend, when, and an
/// HMAC-SHA256 of both under the secret the drone and its proxies share.
///
///     HANGAR-INGRESS 1 <backend id> <unix seconds> <hex hmac of "1 <backend id> <unix seconds>">\n
public enum IngressPreface {
    /// How far the preface's time may be from the drone's clock.
    public static let window: Int = 60

    /// The preface for `backend`, signed now.
    public static func make(backend: BackendID, secret: [UInt8], now: Int = Int(time(nil))) -> String {
        "HANGAR-INGRESS 1 \(backend) \(now) \(hex(mac(backend: backend.rawValue, time: now, secret: secret)))\n"
    }

    static func mac(backend: String, time: Int, secret: [UInt8]) -> [UInt8] {
        let message = Array("1 \(backend) \(time)".utf8)
        var out = [UInt8](repeating: 0, count: 32)
        _ = hg_hmac_sha256(secret, secret.count, message, message.count, &out)
        return out
    }

    static func hex(_ bytes: [UInt8]) -> String {
        bytes.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
    }

    /// The backend id of a valid preface, or why it is refused.
    static func verify(_ line: String, secret: [UInt8], now: Int = Int(time(nil))) -> Result<BackendID, IngressRefusal> {
        let fields = line.split(separator: " ", omittingEmptySubsequences: false)
        guard fields.count == 5, fields[0] == "HANGAR-INGRESS", fields[1] == "1" else {
            return .failure(.malformed)
        }
        guard let stamp = Int(fields[3]), let id = try? BackendID(String(fields[2])) else { return .failure(.malformed) }
        guard abs(now - stamp) <= window else { return .failure(.expired) }
        let expected = Array(hex(mac(backend: String(fields[2]), time: stamp, secret: secret)).utf8)
        let given = Array(fields[4].utf8)
        guard given.count == expected.count, hg_equal_constant_time(given, expected, given.count) == 1 else {
            return .failure(.badSignature)
        }
        return .success(id)
    }
}

/// Why an ingress connection was refused.
public enum IngressRefusal: String, Error, Sendable {
    case malformed = "malformed preface"
    case expired = "preface outside the time window"
    case badSignature = "wrong signature"
    case unknownBackend = "no such backend"
    case notReady = "backend not ready"
}

/// The drone's one TCP port for proxies on other hosts. A connection starts with an
/// `IngressPreface` line; a missing or wrong one is refused and logged, and no byte of it
/// reaches a backend. After a valid one, bytes are carried to the backend with splice.
public final class IngressListener: Sendable {
    let drone: Drone
    let secret: [UInt8]
    let logger: Logger
    let socket: Int32
    /// The port it listens on (useful when asked for port 0).
    public let port: UInt16
    private let refusals = Mutex<[IngressRefusal]>([])

    /// Listens on `address`:`port` (0: any free port).
    public init(drone: Drone, secret: [UInt8], address: String = "127.0.0.1", port: UInt16 = 0, logger: Logger) throws(DroneError) {
        guard secret.count >= 16 else { throw DroneError("the ingress secret must be at least 16 bytes") }
        self.drone = drone
        self.secret = secret
        self.logger = logger
        let fd = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw DroneError("ingress socket: \(String(cString: strerror(errno)))") }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var sockaddress = sockaddr_in()
        sockaddress.sin_family = sa_family_t(AF_INET)
        sockaddress.sin_port = port.bigEndian
        guard inet_pton(AF_INET, address, &sockaddress.sin_addr) == 1 else {
            Glibc.close(fd)
            throw DroneError("ingress address \(address) is not an IPv4 address")
        }
        let bound = withUnsafePointer(to: &sockaddress) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, listen(fd, 512) == 0 else {
            let err = errno
            Glibc.close(fd)
            throw DroneError("ingress on \(address):\(port): \(String(cString: strerror(err)))")
        }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &sockaddress) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        socket = fd
        self.port = UInt16(bigEndian: sockaddress.sin_port)
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
                if -client == EINTR || -client == ECONNABORTED { continue }
                Glibc.close(socket)
                return
            }
            if startThread({ [self] in admit(client) }) != 0 { Glibc.close(client) }
        }
    }

    /// Reads the preface (one byte at a time, so that nothing after it is consumed), checks
    /// it, and hands the connection to the backend.
    private func admit(_ client: Int32) {
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var line: [UInt8] = []
        var byte: UInt8 = 0
        while line.count < 256 {
            let n = read(client, &byte, 1)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 || byte == UInt8(ascii: "\n") { break }
            line.append(byte)
        }
        timeout = timeval(tv_sec: 0, tv_usec: 0)
        setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let result = byte == UInt8(ascii: "\n")
            ? IngressPreface.verify(String(decoding: line, as: UTF8.self), secret: secret) : .failure(.malformed)
        switch result {
        case .failure(let refusal):
            refuse(client, refusal, line)
        case .success(let id):
            guard let backend = drone.backend(id) else { return refuse(client, .unknownBackend, line) }
            guard let upstream = try? backend.connect() else { return refuse(client, .notReady, line) }
            backend.traffic.carry(client: client, backend: upstream)
        }
    }

    private func refuse(_ client: Int32, _ refusal: IngressRefusal, _ line: [UInt8]) {
        refusals.withLock { list in
            list.append(refusal)
            if list.count > 100 { list.removeFirst(list.count - 100) }
        }
        logger.warning(
            "ingress connection refused",
            metadata: ["reason": "\(refusal.rawValue)", "preface": "\(String(decoding: line.prefix(80), as: UTF8.self))"])
        Glibc.close(client)
    }
}
