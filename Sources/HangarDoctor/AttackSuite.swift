import Glibc
import HangarCore
import HangarPolicy
import HangarSandbox

/// One attack of the isolation suite: hostile code (`hangar-attack NAME`) run in a sandbox
/// made from a policy, and what counts as contained.
public struct Attack: Sendable {
    public enum Group: String, Sendable {
        case resources, kernel, files = "processes and files", network, signals = "signals and time"
    }

    /// What the suite expects.
    public enum Expectation: Sendable {
        /// The program itself says CONTAINED (a refused call, a limit it hit).
        case reports
        /// The sandbox ends for this reason (the OOM killer, the wall clock).
        case ends(Outcome.Reason)
        /// CPU time over wall time stays at or below the policy's cores, with 50% slack.
        case cpuWithinQuota
        /// The program dies with everything it started; the sibling sandbox and the host
        /// are unharmed (judged for every attack anyway).
        case leavesNothing

        public var description: String {
            switch self {
            case .reports: "refused"
            case .ends(let reason): "ends as \(reason)"
            case .cpuWithinQuota: "held to its CPU quota"
            case .leavesNothing: "nothing survives"
            }
        }
    }

    public let name: String
    public let group: Group
    public let summary: String
    public let expectation: Expectation

    init(_ name: String, _ group: Group, _ summary: String, _ expectation: Expectation = .reports) {
        self.name = name
        self.group = group
        self.summary = summary
        self.expectation = expectation
    }

    /// The suite, in the order it runs.
    public static let all: [Attack] = [
        Attack("fork-bomb", .resources, "fork until refused", .reports),
        Attack("thread-bomb", .resources, "create threads until refused"),
        Attack("memory-hog", .resources, "touch anonymous memory without end", .ends(.oom)),
        Attack("shm-hog", .resources, "fill /dev/shm"),
        Attack("tmp-hog", .resources, "fill /tmp"),
        Attack("disk-fill", .resources, "fill the writable layer"),
        Attack("inode-exhaustion", .resources, "create files until refused"),
        Attack("cpu-spin", .resources, "spin eight threads for three seconds", .cpuWithinQuota),
        Attack("wall-clock", .resources, "never end", .ends(.wallTimeout)),
        Attack("daemon", .resources, "leave a double-forked daemon behind", .leavesNothing),
        Attack("zombie-pile", .resources, "orphan 200 short-lived processes"),
        Attack("fd-exhaustion", .resources, "open files until refused"),
        Attack("sysrq-trigger", .kernel, "write /proc/sysrq-trigger"),
        Attack("core-pattern", .kernel, "write /proc/sys/kernel/core_pattern"),
        Attack("modprobe", .kernel, "write /proc/sys/kernel/modprobe"),
        Attack("release-agent", .kernel, "unshare and mount a cgroup v1 hierarchy (release_agent)"),
        Attack("mount", .kernel, "mount a tmpfs"),
        Attack("new-mount-api", .kernel, "fsopen and open_tree"),
        Attack("userns-unshare", .kernel, "unshare a user namespace"),
        Attack("userns-clone", .kernel, "clone and clone3 with CLONE_NEWUSER"),
        Attack("setns", .kernel, "setns into /proc/1/ns/*"),
        Attack("capabilities", .kernel, "audit and raise capabilities"),
        Attack("dangerous-syscalls", .kernel, "27 dangerous system calls"),
        Attack("x32", .kernel, "an x32 system call"),
        Attack("int80", .kernel, "an i386 int 0x80 system call"),
        Attack("keyctl", .kernel, "keyctl"),
        Attack("add-key", .kernel, "add_key"),
        Attack("bpf", .kernel, "bpf"),
        Attack("perf-event-open", .kernel, "perf_event_open"),
        Attack("userfaultfd", .kernel, "userfaultfd"),
        Attack("io-uring", .kernel, "io_uring_setup"),
        Attack("open-by-handle", .kernel, "open_by_handle_at over 2000 inodes"),
        Attack("ptrace", .files, "ptrace every pid"),
        Attack("process-vm-readv", .files, "read every pid's memory"),
        Attack("canary-paths", .files, "reach a host file through /proc/*/root, cwd and .. chains"),
        Attack("find-canary", .files, "search the whole tree for a host file"),
        Attack("supervisor-binary", .files, "open /proc/self/exe and /proc/1/exe for writing"),
        Attack("leaked-fds", .files, "look for inherited fds and a cwd outside the root"),
        Attack("terminal-injection", .files, "TIOCSTI and TIOCLINUX, high-bit variants too"),
        Attack("setuid-binary", .files, "run a setuid-root, file-capability binary"),
        Attack("device-nodes", .files, "mknod and look for /dev/mem, /dev/kmsg"),
        Attack("cgroup-move", .files, "reach a cgroup file system to move out"),
        Attack("raw-socket", .network, "open a raw IPv4 socket"),
        Attack("packet-socket", .network, "open a packet socket, also as AF_INET SOCK_PACKET"),
        Attack("vsock-socket", .network, "open a vsock socket"),
        Attack("alg-socket", .network, "open an AF_ALG socket"),
        Attack("host-loopback", .network, "connect to a service on the host's loopback"),
        Attack("abstract-socket", .network, "connect to a host abstract unix socket"),
        Attack("routes", .network, "find an interface or route besides lo"),
        Attack("kill-all", .signals, "kill(-1, SIGKILL)", .leavesNothing),
        Attack("kill-supervisor", .signals, "kill init and look for the supervisor"),
        Attack("realtime", .signals, "switch to real-time scheduling (SCHED_FIFO)"),
        Attack("clock-settime", .signals, "set the clock"),
        Attack("sethostname", .signals, "set the hostname"),
    ]
}

/// What one attack did.
public struct AttackResult: Sendable {
    public let attack: Attack
    /// What was observed: the program's line, the outcome, and any harm found on the host.
    public let observed: String
    public let contained: Bool
}

/// Runs the suite: each attack in a fresh sandbox made from a policy, with a sibling
/// sandbox running throughout; after each, the sibling must still run, the host must
/// still fork, and the host's canary must be untouched.
public final class AttackSuite: Sendable {
    let runtime: SandboxRuntime
    let policy: Policy
    let attackBinary: String
    let weakening: Weakening?

    /// A deliberate hole in the attack sandboxes, to show what one layer stops.
    public enum Weakening: String, Sendable, CaseIterable {
        /// The seccomp argument guard is left out (namespace flags to clone, raw, packet,
        /// vsock and alg sockets, TIOCSTI and TIOCLINUX get through). The must-block set
        /// stays: no profile can lift it.
        case argumentGuard = "argument-guard"
        /// No Landlock domain.
        case landlock
    }

    /// `attackBinary`: the static hangar-attack (next to hangar when nil).
    public init(runtime: SandboxRuntime, policy: Policy, attackBinary: String? = nil, weakening: Weakening? = nil) {
        self.runtime = runtime
        self.policy = policy
        self.attackBinary = attackBinary ?? nextToExecutable("hangar-attack")
        self.weakening = weakening
    }


    /// Runs `attacks` (all by default) and returns one result each.
    public func run(_ attacks: [Attack] = Attack.all) async throws -> [AttackResult] {
        let image = try AttackImage(binary: attackBinary)
        defer { image.remove() }
        let canary = try HostCanary()
        defer { canary.remove() }
        let listener = try LoopbackListener()
        defer { listener.close() }

        let sibling = try await runtime.spawn(try spec(image: image, command: ["wall-clock"]))
        let results: [AttackResult]
        do {
            results = try await run(attacks, image: image, sibling: sibling, canary: canary, listener: listener)
        } catch {
            sibling.kill()
            _ = await sibling.outcome()
            throw error
        }
        // Gone before this returns: whoever runs next finds the host as it was.
        sibling.kill()
        _ = await sibling.outcome()
        return results
    }

    private func run(
        _ attacks: [Attack], image: AttackImage, sibling: Sandbox, canary: HostCanary, listener: LoopbackListener
    ) async throws -> [AttackResult] {
        let fingerprint = image.fingerprint()
        var results: [AttackResult] = []
        for attack in attacks {
            var arguments: [String] = []
            switch attack.name {
            case "canary-paths": arguments = [canary.path, canary.name]
            case "find-canary": arguments = [canary.name]
            case "host-loopback": arguments = ["\(listener.port)"]
            case "abstract-socket": arguments = [listener.abstractName]
            default: break
            }
            var result = try await run(attack, arguments: arguments, image: image, sibling: sibling, canary: canary)
            if image.fingerprint() != fingerprint {
                result = AttackResult(attack: attack, observed: result.observed + "; the image changed", contained: false)
            }
            results.append(result)
        }
        return results
    }

    private func spec(image: AttackImage, command: [String], wallTimeout: Int? = nil) throws -> SandboxSpec {
        var policy = self.policy
        if let wallTimeout, policy.limits.wallTimeout == nil {
            var request = Policy.Limits.unset
            request.wallTimeout = wallTimeout
            policy = try policy.applying(request: request, from: "the attack suite")
        }
        var spec = try policy.spec(image: image.image, command: ["/attack"] + command, host: .fromEnvironment())
        switch weakening {
        case .argumentGuard:
            spec.seccomp.name += "-without-argument-guard"
            spec.seccomp.argumentDenials = []
            spec.seccomp.conditionalAllows = []
            spec.seccomp.allowed.formUnion(["socket", "ioctl", "clone"])
        case .landlock:
            spec.landlock = false
        case nil:
            break
        }
        let null = AttackSuite.devNull
        spec.stdio = (null, spec.stdio.output, spec.stdio.error)
        return spec
    }

    static let devNull: Int32 = open("/dev/null", O_RDWR | O_CLOEXEC)

    private func run(
        _ attack: Attack, arguments: [String], image: AttackImage, sibling: Sandbox, canary: HostCanary
    ) async throws -> AttackResult {
        var spec = try spec(
            image: image, command: [attack.name] + arguments, wallTimeout: attack.name == "wall-clock" ? 2 : 60)
        let output = try OutputPipe()
        spec.stdio = (AttackSuite.devNull, output.write, AttackSuite.devNull)
        let sandbox: Sandbox
        do {
            sandbox = try await runtime.spawn(spec)
        } catch {
            output.closeBoth()
            return AttackResult(attack: attack, observed: "the sandbox did not start: \(error)", contained: false)
        }
        output.closeWrite()
        let outcome = await sandbox.outcome()
        let line = output.readAll().split(separator: "\n").last.map(String.init) ?? ""
        var contained: Bool
        var observed = line.isEmpty ? "\(outcome)" : line
        switch attack.expectation {
        case .reports:
            contained = line.hasPrefix("CONTAINED")
        case .ends(let reason):
            contained = outcome.reason == reason
            observed = "\(outcome)"
        case .cpuWithinQuota:
            let cores = policy.limits.cpu ?? Double(sysconf(Int32(_SC_NPROCESSORS_ONLN)))
            let ratio = seconds(outcome.cpuTime ?? .zero) / max(0.001, seconds(outcome.wallTime))
            contained = outcome.cpuTime != nil && ratio <= cores * 1.5
            observed = "CPU time / wall time \(String(format2: ratio)) (quota \(cores) cores)"
        case .leavesNothing:
            contained = true
            observed = line.isEmpty ? "\(outcome)" : "\(line); \(outcome)"
        }
        // Harm outside the sandbox, for every attack.
        var harm: [String] = []
        if kill(sibling.pid, 0) != 0 { harm.append("the sibling sandbox died") }
        if !hostCanFork() { harm.append("the host cannot fork") }
        if !canary.intact() { harm.append("the host canary changed") }
        let left = leftoverProcesses(besides: sibling)
        if !left.isEmpty { harm.append("processes left: \(left.joined(separator: ", "))") }
        if !harm.isEmpty {
            contained = false
            observed += "; " + harm.joined(separator: "; ")
        }
        return AttackResult(attack: attack, observed: observed, contained: contained)
    }

    private func seconds(_ d: Duration) -> Double {
        Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
    }

    private func hostCanFork() -> Bool {
        var pid: pid_t = 0
        var argv: [UnsafeMutablePointer<CChar>?] = [strdup("/bin/true"), nil]
        defer { free(argv[0]) }
        guard posix_spawn(&pid, "/bin/true", nil, nil, &argv, environ) == 0 else { return false }
        var status: Int32 = 0
        waitpid(pid, &status, 0)
        return status == 0
    }

    /// Processes with sandbox uids ([2^30, 2^32)) that are not the sibling's, after a
    /// settling second: the attack's sandbox must be gone entirely.
    private func leftoverProcesses(besides sibling: Sandbox) -> [String] {
        let siblingUID = processUID(sibling.pid)
        var left: [String] = []
        for _ in 0..<50 {
            left = directoryEntries("/proc").compactMap { entry -> String? in
                guard let pid = pid_t(entry), let uid = processUID(pid), uid >= 1 << 30, uid < 0xffff_ffff,
                    uid != siblingUID
                else { return nil }
                return entry
            }
            if left.isEmpty { break }
            usleep(20_000)
        }
        return left
    }

    private func processUID(_ pid: pid_t) -> UInt64? {
        guard let status = readTextFile("/proc/\(pid)/status"),
            let line = status.split(separator: "\n").first(where: { $0.hasPrefix("Uid:") })
        else { return nil }
        return line.split(whereSeparator: { $0 == "\t" || $0 == " " }).dropFirst().first.flatMap { UInt64($0) }
    }
}

extension String {
    init(format2 value: Double) {
        let hundredths = Int((value * 100).rounded())
        self = "\(hundredths / 100).\(hundredths % 100 < 10 ? "0" : "")\(hundredths % 100)"
    }
}
