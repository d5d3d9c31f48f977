import CShims
import Glibc
import HangarCore
import Synchronization

/// How a sandbox's init ended.
public enum ExitStatus: Sendable, Equatable, CustomStringConvertible {
    /// It exited with this code (hangar-init passes on the command's; 128+N for signal N).
    case exited(Int32)
    /// It was killed by this signal (the whole sandbox was killed).
    case signaled(Int32)

    /// Whether a signal ended it.
    public var isSignal: Bool {
        if case .signaled = self { return true }
        return false
    }

    /// The status as a shell reports it: the code, or 128 + the signal.
    public var shellStatus: Int32 {
        switch self {
        case .exited(let code): code
        case .signaled(let signal): 128 + signal
        }
    }

    public var description: String {
        switch self {
        case .exited(let code): "exited with code \(code)"
        case .signaled(let signal): "killed by signal \(signal)"
        }
    }
}

/// Waits for processes through their pidfds on one epoll thread; never waitpid(-1).
final class Reaper: Sendable {
    private let epoll: Int32
    private let waiters = Mutex<[Int32: CheckedContinuation<ExitStatus, Never>]>([:])

    init() throws(SandboxError) {
        epoll = epoll_create1(Int32(EPOLL_CLOEXEC))
        guard epoll >= 0 else { throw .system(.host, "epoll_create1 for the reaper", errno: Glibc.errno) }
        let started = startThread { [self] in run() }
        guard started == 0 else { throw .system(.host, "starting the reaper thread", errno: started) }
    }

    /// The exit status of the process behind `pidfd`, once it has ended. The pidfd stays
    /// open and belongs to the caller.
    func wait(pidfd: Int32) async -> ExitStatus {
        await withCheckedContinuation { continuation in
            waiters.withLock { $0[pidfd] = continuation }
            var event = epoll_event()
            event.events = EPOLLIN.rawValue | EPOLLONESHOT.rawValue
            event.data.fd = pidfd
            if epoll_ctl(epoll, EPOLL_CTL_ADD, pidfd, &event) < 0 {
                // Not pollable: cannot happen for a pidfd; fall back to a blocking wait.
                let continuation = waiters.withLock { $0.removeValue(forKey: pidfd) }
                continuation?.resume(returning: Self.blockingReap(pidfd))
            }
        }
    }

    private static func blockingReap(_ pidfd: Int32) -> ExitStatus {
        var info = siginfo_t()
        while waitid(idtype_t(rawValue: 3), id_t(pidfd), &info, WEXITED) < 0 && errno == EINTR {}
        return status(code: info._sifields._sigchld.si_status, killed: info.si_code != CLD_EXITED)
    }

    private static func status(code: Int32, killed: Bool) -> ExitStatus {
        killed ? .signaled(code) : .exited(code)
    }

    private func run() {
        var events = [epoll_event](repeating: epoll_event(), count: 64)
        while true {
            let n = epoll_wait(epoll, &events, Int32(events.count), -1)
            if n < 0 { continue }
            for event in events.prefix(Int(n)) {
                let pidfd = event.data.fd
                var code: Int32 = 0
                var bySignal: Int32 = 0
                let result = hg_pidfd_reap(pidfd, &code, &bySignal)
                if result == 0 {
                    // Spurious: re-arm.
                    var again = epoll_event()
                    again.events = EPOLLIN.rawValue | EPOLLONESHOT.rawValue
                    again.data.fd = pidfd
                    epoll_ctl(epoll, EPOLL_CTL_MOD, pidfd, &again)
                    continue
                }
                epoll_ctl(epoll, EPOLL_CTL_DEL, pidfd, nil)
                let status = result > 0 ? Self.status(code: code, killed: bySignal != 0) : .signaled(SIGKILL)
                let continuation = waiters.withLock { $0.removeValue(forKey: pidfd) }
                continuation?.resume(returning: status)
            }
        }
    }
}
