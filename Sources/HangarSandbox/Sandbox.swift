import CShims
import Glibc
import HangarCore

/// A running sandbox: hangar-init (PID 1 inside) and everything it started.
public final class Sandbox: Sendable {
    /// The sandbox's id.
    public let id: SandboxID
    /// The host pid of the sandbox's init.
    public let pid: pid_t
    private let pidfd: Int32
    private let runtime: SandboxRuntime
    private let resources: SandboxResources
    private let exit: Task<ExitStatus, Never>

    init(id: SandboxID, pid: pid_t, pidfd: Int32, runtime: SandboxRuntime, resources: SandboxResources) {
        self.id = id
        self.pid = pid
        self.pidfd = pidfd
        self.runtime = runtime
        self.resources = resources
        let reaper = runtime.reaper
        self.exit = Task {
            let status = await reaper.wait(pidfd: pidfd)
            // init has been reaped: the kernel has killed everything else in the pid
            // namespace, and the mount and network namespaces are gone with it.
            resources.release()
            return status
        }
    }

    deinit {
        // The pidfd is closed only after init has been reaped, so that it always names it.
        let pidfd = self.pidfd
        let exit = self.exit
        Task {
            _ = await exit.value
            close(pidfd)
        }
    }

    /// Sends `signal` to the sandbox's init, which passes SIGTERM, SIGINT, SIGHUP, SIGQUIT,
    /// SIGUSR1, SIGUSR2 and SIGWINCH on to the command. Does nothing once the sandbox ended.
    public func signal(_ signal: Int32) {
        _ = hg_pidfd_send_signal(pidfd, signal)
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
