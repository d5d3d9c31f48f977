import CShims
import Glibc
import HangarCore
import HangarPolicy
import HangarSandbox

/// Probing a backend's port from inside its network namespace (no host port).
public enum Readiness {
    /// Probes until the backend answers (true), it ends, or `timeout` passes (false): at
    /// once, then after 1, 2, 4, … ms, and every 50 ms from then on. Most servers listen
    /// within milliseconds of their start; a fixed 50 ms step would add half of it to every
    /// cold start on average.
    public static func wait(
        for sandbox: Sandbox, port: UInt16, probe: Policy.Backend.Probe, timeout: Duration
    ) async -> Bool {
        await outcome(for: sandbox, port: port, probe: probe, timeout: timeout) == .ready
    }

    /// How waiting for readiness ended.
    public enum Result: Sendable, Equatable {
        case ready
        /// The sandbox ended first.
        case ended
        case timedOut
    }

    /// As `wait`, telling a backend that ended apart from one that stayed silent.
    public static func outcome(
        for sandbox: Sandbox, port: UInt16, probe: Policy.Backend.Probe, timeout: Duration
    ) async -> Result {
        let deadline = ContinuousClock.now + timeout
        var pause = Duration.milliseconds(1)
        while ContinuousClock.now < deadline {
            // A probe blocks (up to a second for a reply): not on a cooperative thread.
            if await BlockingPool.shared.run({ answers(sandbox, port: port, probe: probe) }) { return .ready }
            if kill(sandbox.pid, 0) != 0 { return .ended }
            try? await Task.sleep(for: pause)
            pause = min(pause * 2, .milliseconds(50))
        }
        return .timedOut
    }

    /// One attempt.
    public static func answers(_ sandbox: Sandbox, port: UInt16, probe: Policy.Backend.Probe) -> Bool {
        guard let fd = try? sandbox.connect(port: port) else { return false }
        defer { close(fd) }
        if probe == .tcp { return true }
        // A backend that accepts and then says nothing is not ready: at most a second.
        var timeout = timeval(tv_sec: 1, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let request = "HEAD / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        let sent = request.utf8CString.withUnsafeBufferPointer { send(fd, $0.baseAddress, $0.count - 1, Int32(MSG_NOSIGNAL)) }
        guard sent == request.utf8.count else { return false }
        var reply = [UInt8](repeating: 0, count: 5)
        var got = 0
        while got < 5 {
            let n = reply.withUnsafeMutableBytes { recv(fd, $0.baseAddress! + got, 5 - got, 0) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return false }
            got += n
        }
        return reply == Array("HTTP/".utf8)
    }
}
