import CShims
import Glibc
import HangarSandbox

/// One check of the host: what was found, and how to fix it when it falls short.
public struct HostCheck: Sendable {
    public enum Status: String, Sendable {
        case ok = "ok"
        case warning = "warning"
        case missing = "MISSING"
    }

    public let name: String
    public let status: Status
    public let found: String
    public let fix: String?

    public init(name: String, status: Status, found: String, fix: String?) {
        self.name = name
        self.status = status
        self.found = found
        self.fix = fix
    }

    /// Hangar cannot run safely when a required check is missing.
    public var blocks: Bool { status == .missing }

    /// Checks this host for what Hangar's sandboxes need.
    public static func all() -> [HostCheck] {
        [kernel(), root(), userNamespaces(), overlay(), cgroups(), seccomp(), landlock(), pidfd(), clone3(), loop()]
    }

    static func kernel() -> HostCheck {
        var name = utsname()
        uname(&name)
        let release = withUnsafeBytes(of: name.release) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
        let parts = release.split(whereSeparator: { !$0.isNumber }).prefix(2).compactMap { Int($0) }
        let ok = parts.count == 2 && (parts[0], parts[1]) >= (5, 12)
        return HostCheck(
            name: "kernel", status: ok ? .ok : .missing, found: "Linux \(release)",
            fix: ok ? nil : "Linux 5.12 or newer is needed (idmapped mounts, openat2, close_range, the new mount API)")
    }

    static func root() -> HostCheck {
        geteuid() == 0
            ? HostCheck(name: "privileges", status: .ok, found: "running as root", fix: nil)
            : HostCheck(
                name: "privileges", status: .missing, found: "uid \(geteuid())",
                fix: "run as root: sandboxes need namespaces, idmapped mounts and cgroups")
    }

    static func userNamespaces() -> HostCheck {
        let max = Int((readTextFile("/proc/sys/user/max_user_namespaces") ?? "").filter(\.isNumber)) ?? -1
        if max == 0 {
            return HostCheck(
                name: "user namespaces", status: .missing, found: "max_user_namespaces = 0",
                fix: "sysctl -w user.max_user_namespaces=63000 (every sandbox has its own)")
        }
        let status: Status = max < 1000 && max >= 0 ? .warning : .ok
        return HostCheck(
            name: "user namespaces", status: status, found: max < 0 ? "enabled" : "max_user_namespaces = \(max)",
            fix: status == .ok ? nil : "raise user.max_user_namespaces: it bounds the number of sandboxes")
    }

    static func overlay() -> HostCheck {
        let filesystems = readTextFile("/proc/filesystems") ?? ""
        if filesystems.contains("\toverlay\n") {
            return HostCheck(name: "overlayfs", status: .ok, found: "available", fix: nil)
        }
        return HostCheck(name: "overlayfs", status: .missing, found: "not in /proc/filesystems", fix: "modprobe overlay")
    }

    static func cgroups() -> HostCheck {
        let support = CgroupSupport.probe()
        let list = support.controllers.joined(separator: ", ")
        switch support.version {
        case "v2":
            return HostCheck(name: "cgroups", status: .ok, found: "v2: \(list) (CLONE_INTO_CGROUP)", fix: nil)
        case "v1":
            return HostCheck(
                name: "cgroups", status: .warning, found: "v1: \(list)",
                fix: "v2 is preferred: on v1 joining a cgroup waits for an RCU grace period and stalls forks host-wide")
        default:
            return HostCheck(
                name: "cgroups", status: .missing, found: "no memory or pids controller",
                fix: "mount cgroup v2 with memory, pids and cpu delegated to hangar's group (systemd: Delegate=yes)")
        }
    }

    static func seccomp() -> HostCheck {
        let status = readTextFile("/proc/self/status") ?? ""
        let has = status.contains("\nSeccomp:")
        return HostCheck(
            name: "seccomp", status: has ? .ok : .missing, found: has ? "filter mode available" : "no seccomp",
            fix: has ? nil : "a kernel with CONFIG_SECCOMP_FILTER")
    }

    static func landlock() -> HostCheck {
        let abi = hg_probe_landlock()
        if abi > 0 { return HostCheck(name: "Landlock", status: .ok, found: "ABI \(abi)", fix: nil) }
        return HostCheck(
            name: "Landlock", status: .warning, found: "not available (\(errnoSymbol(-abi)))",
            fix: "add landlock to the lsm= boot parameter (CONFIG_SECURITY_LANDLOCK): a second layer under the mount flags")
    }

    static func pidfd() -> HostCheck {
        let r = hg_probe_pidfd()
        return HostCheck(
            name: "pidfd", status: r == 0 ? .ok : .missing, found: r == 0 ? "pidfd_open works" : errnoSymbol(-r),
            fix: r == 0 ? nil : "Linux 5.3 or newer")
    }

    static func clone3() -> HostCheck {
        let r = hg_probe_clone3()
        return HostCheck(
            name: "clone3", status: r == 0 ? .ok : .warning, found: r == 0 ? "available" : "absent",
            fix: r == 0 ? nil : "Linux 5.7 or newer, for CLONE_INTO_CGROUP on cgroup v2")
    }

    static func loop() -> HostCheck {
        access("/dev/loop-control", F_OK) == 0
            ? HostCheck(name: "loop devices", status: .ok, found: "/dev/loop-control", fix: nil)
            : HostCheck(
                name: "loop devices", status: .warning, found: "no /dev/loop-control",
                fix: "modprobe loop: needed only for upper = \"disk\"")
    }
}

extension HostCheck {
    /// The end-to-end check: a sandbox starts and runs a program (user namespace, idmapped
    /// image, overlay, /proc, pivot_root, seccomp, Landlock, hangar-init all at once). Its
    /// error names the step that failed, e.g. the idmapped mount of the image.
    public static func sandbox(runtime: SandboxRuntime, attackBinary: String? = nil) async -> HostCheck {
        let binary = attackBinary ?? nextToExecutable("hangar-attack")
        do {
            let image = try AttackImage(binary: binary)
            defer { image.remove() }
            var spec = SandboxSpec(image: image.image, command: ["/attack", "list"])
            spec.stdio = (AttackSuite.devNull, AttackSuite.devNull, AttackSuite.devNull)
            let start = ContinuousClock.now
            let outcome = try await runtime.spawn(spec).outcome()
            let elapsed = ContinuousClock.now - start
            guard outcome.status == .exited(0) else {
                return HostCheck(name: "sandbox", status: .missing, found: "a test program \(outcome)", fix: "see the status above")
            }
            return HostCheck(
                name: "sandbox", status: .ok,
                found: "one ran a program (user namespace, idmapped image, overlay, seccomp, hangar-init): \(milliseconds(elapsed)) ms",
                fix: nil)
        } catch {
            return HostCheck(name: "sandbox", status: .missing, found: "does not start: \(error)", fix: "the message names the step that failed")
        }
    }

    private static func milliseconds(_ d: Duration) -> String {
        String(format2: (Double(d.components.seconds) * 1e3 + Double(d.components.attoseconds) / 1e15))
    }
}
