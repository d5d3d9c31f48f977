import CShims
import Glibc
import HangarCore
import Synchronization

/// A running sandbox: hangar-init (PID 1 inside) and everything it started.
public final class Sandbox: Sendable {
    /// The sandbox's id.
    public let id: SandboxID
    /// The host pid of the sandbox's init.
    public let pid: pid_t
    /// Whether it was created ahead and its command handed over (see `keepPrepared`).
    public let prepared: Bool
    /// init's pidfd while it has not been reaped; nil after, so that a signal can never
    /// reach another process through a reused fd number.
    private let pidfd: PidfdHandle
    private let exit: Task<ExitStatus, Never>

    /// Supervises `pidfd`; the runtime calls this right after the spawn.
    static func supervise(
        id: SandboxID, pid: pid_t, pidfd: Int32, reaper: Reaper, resources: SandboxResources, prepared: Bool
    ) -> Sandbox {
        let handle = PidfdHandle(pidfd)
        let exit = Task {
            let status = await reaper.wait(pidfd: pidfd)
            // init has been reaped: the kernel has killed everything else in the pid
            // namespace, and the mount and network namespaces are gone with it.
            handle.close()
            resources.release()
            return status
        }
        return Sandbox(id: id, pid: pid, prepared: prepared, pidfd: handle, exit: exit)
    }

    private init(id: SandboxID, pid: pid_t, prepared: Bool, pidfd: PidfdHandle, exit: Task<ExitStatus, Never>) {
        self.id = id
        self.pid = pid
        self.prepared = prepared
        self.pidfd = pidfd
        self.exit = exit
    }

    /// Sends `signal` to the sandbox's init, which passes SIGTERM, SIGINT, SIGHUP, SIGQUIT,
    /// SIGUSR1, SIGUSR2 and SIGWINCH on to the command. Does nothing once the sandbox ended.
    public func signal(_ signal: Int32) {
        pidfd.send(signal)
    }

    /// Kills the whole sandbox at once (SIGKILL to init ends its pid namespace).
    public func kill() {
        signal(SIGKILL)
    }

    /// Waits until the sandbox has ended and its host resources are released.
    public func wait() async -> ExitStatus {
        await exit.value
    }
}

/// A pidfd that is closed exactly once, after which signals are no longer sent.
final class PidfdHandle: Sendable {
    private let fd: Mutex<Int32?>

    init(_ fd: Int32) { self.fd = Mutex(fd) }

    func send(_ signal: Int32) {
        fd.withLock { fd in
            if let fd { _ = hg_pidfd_send_signal(fd, signal) }
        }
    }

    func close() {
        fd.withLock { fd in
            if let open = fd { Glibc.close(open) }
            fd = nil
        }
    }
}
