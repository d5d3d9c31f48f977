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
    private let ending: Ending
    private let exit: Task<Outcome, Never>
    private let resources: SandboxResources

    /// Supervises `pidfd`; the runtime calls this right after the spawn.
    static func supervise(
        id: SandboxID, pid: pid_t, pidfd: Int32, reaper: Reaper, resources: SandboxResources, prepared: Bool
    ) -> Sandbox {
        let handle = PidfdHandle(pidfd)
        let ending = Ending()
        let started = ContinuousClock.now
        let exit = Task {
            let status = await reaper.wait(pidfd: pidfd)
            // init has been reaped: the kernel has killed everything else in the pid
            // namespace, and the mount and network namespaces are gone with it.
            handle.close()
            ending.cancelDeadline()
            let statistics = resources.statistics()
            resources.release()
            return Outcome(
                status: status, reason: ending.reason(status: status, oomKills: statistics.oomKills),
                peakMemory: statistics.peakMemory, cpuTime: statistics.cpuTime, wallTime: ContinuousClock.now - started)
        }
        return Sandbox(
            id: id, pid: pid, prepared: prepared, pidfd: handle, ending: ending, exit: exit, resources: resources)
    }

    private init(
        id: SandboxID, pid: pid_t, prepared: Bool, pidfd: PidfdHandle, ending: Ending, exit: Task<Outcome, Never>,
        resources: SandboxResources
    ) {
        self.resources = resources
        self.id = id
        self.pid = pid
        self.prepared = prepared
        self.pidfd = pidfd
        self.ending = ending
        self.exit = exit
    }

    /// Sends `signal` to the sandbox's init, which passes SIGTERM, SIGINT, SIGHUP, SIGQUIT,
    /// SIGUSR1, SIGUSR2 and SIGWINCH on to the command. Does nothing once the sandbox ended.
    public func signal(_ signal: Int32) {
        pidfd.send(signal)
    }

    /// Kills the whole sandbox at once (SIGKILL to init ends its pid namespace). Its
    /// outcome says `killed`.
    public func kill() {
        ending.note(.killed)
        pidfd.send(SIGKILL)
    }

    /// Kills the sandbox `timeout` from now unless it has ended (the outcome says
    /// `wallTimeout`). A later call replaces the deadline.
    public func killAfter(_ timeout: Duration) {
        let task = Task { [pidfd, ending] in
            guard (try? await Task.sleep(for: timeout)) != nil else { return }
            ending.note(.wallTimeout)
            pidfd.send(SIGKILL)
        }
        ending.setDeadline(task)
    }

    /// A TCP connection (a blocking, close-on-exec fd) to 127.0.0.1:`port` inside the
    /// sandbox's network namespace: no host port is involved. Throws ECONNREFUSED while
    /// nothing listens there, and when the sandbox has ended.
    public func connect(port: UInt16) throws(SandboxError) -> Int32 {
        guard let netns = resources.duplicateNetworkNamespace() else {
            throw SandboxError(.host, "sandbox \(id) has ended: no network namespace to connect into", errno: ECONNREFUSED)
        }
        defer { close(netns) }
        let fd = hg_socket_in_netns(netns, AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw .system(.host, "a socket in sandbox \(id)'s network namespace", errno: -fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard connected == 0 else {
            let err = errno
            close(fd)
            throw .system(.host, "connecting to 127.0.0.1:\(port) in sandbox \(id)", errno: err)
        }
        return fd
    }

    /// What its cgroup counts so far (nothing for a sandbox without limits, or once it ended).
    public func statistics() -> CgroupStatistics {
        resources.statistics()
    }

    /// Waits until the sandbox has ended and its host resources are released.
    public func wait() async -> ExitStatus {
        await exit.value.status
    }

    /// Waits until the sandbox has ended and its host resources are released; how it ended.
    public func outcome() async -> Outcome {
        await exit.value
    }
}

/// Why a sandbox was ended by its supervisor, and its pending deadline.
final class Ending: Sendable {
    private let state = Mutex<(reason: Outcome.Reason?, deadline: Task<Void, Never>?)>((nil, nil))

    func note(_ reason: Outcome.Reason) {
        state.withLock { if $0.reason == nil { $0.reason = reason } }
    }

    func setDeadline(_ task: Task<Void, Never>) {
        state.withLock { state in
            state.deadline?.cancel()
            state.deadline = task
        }
    }

    func cancelDeadline() {
        state.withLock { $0.deadline?.cancel() }
    }

    func reason(status: ExitStatus, oomKills: Int) -> Outcome.Reason {
        let noted = state.withLock { $0.reason }
        // The OOM killer ended a process and the command did not exit cleanly.
        if oomKills > 0 && status != .exited(0) { return .oom }
        return noted ?? .exited
    }
}

/// How a sandbox ended, with what the kernel counted for it.
public struct Outcome: Sendable, Equatable, CustomStringConvertible {
    public enum Reason: Sendable, Equatable, CustomStringConvertible {
        /// The command ended by itself (with the status's code or signal).
        case exited
        /// The OOM killer ended it (or a process in it) at the memory limit.
        case oom
        /// Its wall-clock limit ran out and it was killed.
        case wallTimeout
        /// Its supervisor killed it.
        case killed
        /// It never started: a setup step failed.
        case setupFailed(step: SetupStep?, errno: Int32?)

        public var description: String {
            switch self {
            case .exited: "exited"
            case .oom: "oom"
            case .wallTimeout: "wall-timeout"
            case .killed: "killed"
            case .setupFailed(let step, let errno):
                "setup-failed" + (step.map { " at \($0)" } ?? "") + (errno.map { ": \(errnoSymbol($0))" } ?? "")
            }
        }
    }

    /// init's exit status (the command's, passed on).
    public var status: ExitStatus
    public var reason: Reason
    /// The most memory the sandbox used at once, where the cgroup driver reports it.
    public var peakMemory: ByteSize?
    /// CPU time of all its processes.
    public var cpuTime: Duration?
    /// From the spawn to the end.
    public var wallTime: Duration

    public init(status: ExitStatus, reason: Reason, peakMemory: ByteSize? = nil, cpuTime: Duration? = nil, wallTime: Duration) {
        self.status = status
        self.reason = reason
        self.peakMemory = peakMemory
        self.cpuTime = cpuTime
        self.wallTime = wallTime
    }

    /// The outcome of a spawn that failed with `error`.
    public init(failedSpawn error: SandboxError) {
        self.init(status: .exited(125), reason: .setupFailed(step: error.step, errno: error.errno), wallTime: .zero)
    }

    /// "exited with code 0, wall 0.10 s", "oom: killed by signal 9, peak memory 128m, cpu 0.52 s, wall 1.20 s"
    public var description: String {
        var parts = [reason == .exited ? "\(status)" : "\(reason): \(status)"]
        if let peakMemory { parts.append("peak memory \(peakMemory)") }
        if let cpuTime { parts.append("cpu \(seconds(cpuTime)) s") }
        parts.append("wall \(seconds(wallTime)) s")
        return parts.joined(separator: ", ")
    }

    private func seconds(_ d: Duration) -> String {
        let (s, atto) = d.components
        let hundredths = Int64(s) * 100 + atto / 10_000_000_000_000_000
        return "\(hundredths / 100).\(String(hundredths % 100).count == 1 ? "0" : "")\(hundredths % 100)"
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
