import CShims
import Glibc

/// A blocking TCP connection to 127.0.0.1:`port`.
public func connectLoopback(_ port: UInt16) throws -> Int32 {
    let fd = hg_connect_tcp4("127.0.0.1", port, 0)
    guard fd >= 0 else { throw TestFailure("connecting to 127.0.0.1:\(port): \(String(cString: strerror(-fd)))") }
    return fd
}

/// A port free now on 127.0.0.1 (bound, read, released).
public func freeLoopbackPort() throws -> UInt16 {
    var bound: UInt16 = 0
    let fd = hg_listen_tcp4("127.0.0.1", 0, 1, 0, &bound)
    guard fd >= 0 else { throw TestFailure("no free port: \(String(cString: strerror(-fd)))") }
    close(fd)
    return bound
}

/// Writes all of `bytes` to a file, a pipe or a socket (a socket without SIGPIPE).
public func writeAll(_ fd: Int32, _ bytes: [UInt8]) throws {
    var done = 0
    while done < bytes.count {
        let n = bytes[done...].withUnsafeBufferPointer { part in
            let sent = send(fd, part.baseAddress, part.count, Int32(MSG_NOSIGNAL))
            return sent < 0 && errno == ENOTSOCK ? write(fd, part.baseAddress, part.count) : sent
        }
        guard n > 0 else { throw TestFailure("write: errno \(errno)") }
        done += n
    }
}
