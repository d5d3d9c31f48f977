import Glibc
import HangarSandbox

/// A small client for the drone's admin API on its unix socket: one HTTP/1.1 request per
/// connection (Connection: close), for `hangar drone logs` and scripts.
public struct AdminClient: Sendable {
    public let socket: String

    public init(socket: String) { self.socket = socket }

    /// A reply: status, headers (names in lower case) and body.
    public struct Reply: Sendable {
        public var status: Int
        public var headers: [String: String]
        public var body: [UInt8]
    }

    public func get(_ path: String) throws(DroneError) -> Reply {
        let fd = Glibc.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw DroneError("a unix socket: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(socket.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { throw DroneError("socket path too long: \(socket)") }
        withUnsafeMutableBytes(of: &address.sun_path) { path in
            for (i, byte) in bytes.enumerated() { path[i] = byte }
        }
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard connected == 0 else {
            throw DroneError("no drone at \(socket): \(String(cString: strerror(errno)))")
        }
        let request = "GET \(path) HTTP/1.1\r\nHost: drone\r\nConnection: close\r\n\r\n"
        _ = request.utf8CString.withUnsafeBufferPointer { write(fd, $0.baseAddress, $0.count - 1) }
        let response: [UInt8]
        do {
            response = try readToEnd(fd, limit: 64 << 20)
        } catch {
            throw DroneError("the drone's reply: \(error)")
        }
        guard let end = response.firstRange(of: Array("\r\n\r\n".utf8)) else {
            throw DroneError("the drone's reply had no header")
        }
        let head = String(decoding: response[..<end.lowerBound], as: UTF8.self).split(separator: "\r\n")
        guard let statusLine = head.first, let status = Int(statusLine.split(separator: " ").dropFirst().first ?? "") else {
            throw DroneError("the drone's reply had no status")
        }
        var headers: [String: String] = [:]
        for line in head.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers[line[..<colon].lowercased()] = String(line[line.index(after: colon)...]).trimmingLeadingSpaces()
        }
        var body = Array(response[end.upperBound...])
        if let length = headers["content-length"].flatMap(Int.init), length < body.count { body = Array(body.prefix(length)) }
        return Reply(status: status, headers: headers, body: body)
    }
}

extension String {
    func trimmingLeadingSpaces() -> String { String(drop(while: { $0 == " " })) }
}
