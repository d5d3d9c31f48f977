import Glibc
import HangarCore

/// Everything a sandbox is created from. The sandbox does exactly what its spec says;
/// what the spec says comes from policy (mechanism apart from policy).
public struct SandboxSpec: Sendable {
    /// The image: a directory used, read-only and idmapped, as the overlay's lower layer.
    public var image: Image
    /// The command and its arguments; `command[0]` is looked up in `PATH` inside.
    public var command: [String]
    /// The environment, in order. Names may not contain '=' or NUL, values not NUL.
    public var environment: [(name: String, value: String)]
    /// The working directory inside the sandbox, absolute.
    public var workingDirectory: String = "/"
    /// The sandbox's hostname, in its own UTS namespace.
    public var hostname: Hostname
    /// The uid and gid the command runs as inside (0, root of the user namespace, by default;
    /// it holds no capabilities either way).
    public var uid: UInt32 = 0
    public var gid: UInt32 = 0
    /// Size limit of the writable upper layer (a tmpfs that also holds the overlay's work dir).
    public var upperSize: ByteSize = .mebibytes(256)
    /// Inode limit of the upper layer.
    public var upperInodes: UInt64 = 65536
    /// Size limit of /dev/shm.
    public var shmSize: ByteSize = .mebibytes(64)
    /// Where the writable upper layer lives: a tmpfs (memory), or an ext4 file system in a
    /// sparse file on disk (`SandboxRuntimeConfiguration.diskDirectory`).
    public var upper = UpperLayer.tmpfs
    /// Mount the root read-only (the upper layer still holds /dev and /proc mount points).
    public var readOnlyRoot = false
    /// Resource limits, enforced through cgroups.
    public var limits = ResourceLimits()
    /// The seccomp profile installed last, before exec.
    public var seccomp: SeccompProfile = .default
    /// The command's standard input, output and error: host fds to pass as 0, 1, 2.
    public var stdio: (input: Int32, output: Int32, error: Int32) = (0, 1, 2)
    /// More host fds to pass to the command, as 3, 4, …, in order.
    public var extraFDs: [Int32] = []
    /// Mounts on top of the standard tree: host binds and tmpfs (at most 16 binds).
    public var mounts: [SandboxMount] = []
    /// Per-process limits (soft and hard alike), set before the command starts.
    public var rlimits: [Rlimit] = [Rlimit(.core, 0), Rlimit(.realtimePriority, 0)]
    /// The file mode creation mask.
    public var umask: UInt32 = 0o022
    /// Capabilities the command keeps (inside its user namespace); none by default.
    public var keepCapabilities: [Capability] = []
    /// The whole sandbox is killed this long after it started; nil: no limit.
    public var wallTimeout: Duration?
    /// A Landlock domain (where the kernel has Landlock) as a second layer under the mount
    /// flags: writes only beneath the root (unless read-only), /dev and read-write mounts.
    public var landlock = true

    /// Where the command may write, for Landlock: paths inside the sandbox.
    var writablePaths: [String] {
        var paths = readOnlyRoot ? [] : ["/"]
        paths.append("/dev")
        for mount in mounts {
            switch mount {
            case .bind(_, let target, let readOnly) where !readOnly: paths.append(target)
            case .tmpfs(let target, _): paths.append(target)
            default: break
            }
        }
        return paths
    }

    /// A spec for `command` in `image` with the defaults above and a minimal environment.
    public init(image: Image, command: [String]) {
        self.image = image
        self.command = command
        self.environment = [
            ("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
            ("HOME", "/root"),
        ]
        // swift-format-ignore
        self.hostname = try! Hostname("sandbox")
    }

    /// Sets `name` to `value`, replacing an earlier value of the same name.
    public mutating func setEnvironment(_ name: String, _ value: String) {
        environment.removeAll { $0.name == name }
        environment.append((name, value))
    }

    /// Checks everything that can be checked before anything is created.
    func validate() throws(SandboxError) {
        guard let first = command.first, !first.isEmpty else {
            throw .invalid("command", "the command is empty")
        }
        for (index, argument) in command.enumerated() where argument.utf8.contains(0) {
            throw .invalid("command[\(index)]", "contains a NUL byte")
        }
        for (name, value) in environment {
            if name.isEmpty || name.utf8.contains(0) || name.contains("=") {
                throw .invalid("environment", "variable name \"\(name.debugDescription)\" is empty or contains '=' or NUL")
            }
            if value.utf8.contains(0) {
                throw .invalid("environment", "value of \(name) contains a NUL byte")
            }
        }
        guard workingDirectory.hasPrefix("/"), !workingDirectory.utf8.contains(0) else {
            throw .invalid("working directory", "\"\(workingDirectory)\" must be an absolute path without NUL")
        }
        if extraFDs.count > 64 { throw .invalid("extra fds", "at most 64, got \(extraFDs.count)") }
        if umask > 0o777 { throw .invalid("umask", "must be 000...777 (octal)") }
        try validateMounts()
        if upperSize.bytes < 1 << 20 { throw .invalid("upper size", "at least 1m, got \(upperSize)") }
    }
}

/// Limits enforced through cgroups.
public struct ResourceLimits: Sendable, Hashable {
    /// Hard memory limit (memory.max, or memory.limit_in_bytes on v1); nil: none.
    public var memoryMax: ByteSize?
    /// Where reclaim starts (memory.high; the soft limit on v1); nil: none.
    public var memoryHigh: ByteSize?
    /// Swap on top of memory (memory.swap.max; memsw on v1 where swap accounting is on).
    public var swapMax: ByteSize?
    /// Maximum number of tasks (pids.max); nil: none.
    public var pidsMax: Int?
    /// CPU time as a number of cores (cpu.max; the CFS quota on v1); nil: none.
    public var cpu: Double?
    /// Relative CPU weight 1...10000 (cpu.weight; cpu.shares on v1); nil: the default, 100.
    public var cpuWeight: Int?

    /// Limits; none set by default.
    public init(
        memoryMax: ByteSize? = nil, memoryHigh: ByteSize? = nil, swapMax: ByteSize? = nil, pidsMax: Int? = nil,
        cpu: Double? = nil, cpuWeight: Int? = nil
    ) {
        self.memoryMax = memoryMax
        self.memoryHigh = memoryHigh
        self.swapMax = swapMax
        self.pidsMax = pidsMax
        self.cpu = cpu
        self.cpuWeight = cpuWeight
    }

    var isEmpty: Bool { self == ResourceLimits() }
}

extension SandboxSpec {
    /// Targets absolute, distinct and outside /proc, /dev and /sys; bind sources existing
    /// absolute host paths; at most 16 binds.
    func validateMounts() throws(SandboxError) {
        var targets: Set<String> = []
        var binds = 0
        for mount in mounts {
            let target = mount.target
            let parts = target.split(separator: "/")
            guard target.hasPrefix("/"), !parts.isEmpty, !parts.contains(".."), !parts.contains("."),
                !target.utf8.contains(0)
            else { throw .invalid("mount target", "\"\(target)\" must be an absolute path other than /, without . or ..") }
            if ["proc", "dev", "sys"].contains(String(parts[0])) {
                throw .invalid("mount target", "\(target) is managed by Hangar")
            }
            guard targets.insert(target).inserted else { throw .invalid("mount target", "\(target) appears twice") }
            if case .bind(let source, _, _) = mount {
                binds += 1
                var st = stat()
                guard source.hasPrefix("/"), !source.utf8.contains(0), stat(source, &st) == 0 else {
                    throw .invalid("bind source", "\(source) does not exist on the host")
                }
            }
        }
        if binds > 16 { throw .invalid("mounts", "at most 16 binds, got \(binds)") }
    }
}

/// Where a sandbox's writable layer lives.
public enum UpperLayer: String, Sendable, Hashable {
    case tmpfs, disk
}

/// A mount a spec adds to the standard file tree.
public enum SandboxMount: Sendable, Hashable {
    /// A host directory or file at `target`, idmapped: files of host root belong to the
    /// sandbox's root. Not recursive: mounts below `source` are not included.
    case bind(source: String, target: String, readOnly: Bool)
    /// An empty tmpfs of `size` at `target` (mode 1777).
    case tmpfs(target: String, size: ByteSize)

    public var target: String {
        switch self {
        case .bind(_, let target, _), .tmpfs(let target, _): target
        }
    }
}

/// A per-process resource limit, soft and hard.
public struct Rlimit: Sendable, Hashable {
    public enum Resource: Int32, Sendable {
        case cpu = 0, fsize = 1, core = 4, nproc = 6, nofile = 7, addressSpace = 9, realtimePriority = 14
    }

    public var resource: Resource
    public var value: UInt64

    public init(_ resource: Resource, _ value: UInt64) {
        self.resource = resource
        self.value = value
    }
}

/// A Linux capability, by number.
public struct Capability: Sendable, Hashable {
    public let number: Int32
    public let name: String

    public static let chown = Capability(number: 0, name: "CHOWN")
    public static let dacOverride = Capability(number: 1, name: "DAC_OVERRIDE")
    public static let dacReadSearch = Capability(number: 2, name: "DAC_READ_SEARCH")
    public static let fowner = Capability(number: 3, name: "FOWNER")
    public static let fsetid = Capability(number: 4, name: "FSETID")
    public static let kill = Capability(number: 5, name: "KILL")
    public static let setgid = Capability(number: 6, name: "SETGID")
    public static let setuid = Capability(number: 7, name: "SETUID")
    public static let netBindService = Capability(number: 10, name: "NET_BIND_SERVICE")

    /// The capabilities a sandbox may keep: they act only inside its user namespace, on
    /// its own files and processes.
    public static let keepable: [Capability] = [
        .chown, .dacOverride, .dacReadSearch, .fowner, .fsetid, .kill, .setgid, .setuid, .netBindService,
    ]

    /// A keepable capability by name ("NET_BIND_SERVICE", "cap_net_bind_service").
    public init?(keepable name: String) {
        let upper = name.uppercased()
        let bare = upper.hasPrefix("CAP_") ? String(upper.dropFirst(4)) : upper
        guard let found = Self.keepable.first(where: { $0.name == bare }) else { return nil }
        self = found
    }

    private init(number: Int32, name: String) {
        self.number = number
        self.name = name
    }
}
