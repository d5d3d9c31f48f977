import HangarCore
import HangarSandbox

/// What a sandbox of an image runs with: its command, environment, limits, file system,
/// network, seccomp profile and capabilities. Read from a TOML file per image
/// (policies/NAME.toml, see docs/POLICY.md); every field has a safe default.
public struct Policy: Sendable, Equatable {
    /// The policy's name: its file's name without ".toml".
    public var name: String
    /// The files it was read from, the base first (`extends`).
    public var files: [String] = []
    /// Which file set each key that was set in a file ("limits.max.memory_max" → path).
    public internal(set) var sources: [String: String] = [:]
    public var process = Process()
    public var limits = Limits()
    /// How far a request may raise each limit; nil fields: not above the policy's value.
    public var maxima = Limits.unset
    public var filesystem = Filesystem()
    public var network = Network()
    public var backend = Backend()
    public var seccomp = Seccomp()
    public var capabilities = Capabilities()

    public init(name: String) { self.name = name }

    public struct Process: Sendable, Equatable {
        /// The command and its arguments (`command` and `args`); empty: the request must give one.
        public var command: [String] = []
        /// The environment, sorted by name.
        public var environment: [Variable] = [
            Variable(name: "HOME", value: "/root"),
            Variable(name: "PATH", value: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
        ]
        public var workdir = "/"
        public var uid: UInt32 = 0
        public var gid: UInt32 = 0
        public var umask: UInt32 = 0o022
        public var rlimits = Rlimits()
    }

    public struct Variable: Sendable, Equatable {
        public var name: String
        public var value: String
    }

    /// Per-process limits (setrlimit), soft and hard alike; nil: the default below.
    public struct Rlimits: Sendable, Equatable {
        public var nofile: UInt64 = 1024
        public var nproc: UInt64? = nil
        public var core: UInt64 = 0
        public var fsize: UInt64? = nil
        public var addressSpace: UInt64? = nil
        public var cpuSeconds: UInt64? = nil
    }

    public struct Limits: Sendable, Equatable {
        public var memoryMax: ByteSize? = .mebibytes(512)
        public var memoryHigh: ByteSize? = nil
        public var swapMax: ByteSize? = .mebibytes(0)
        public var pidsMax: Int? = 256
        /// CPU time as a number of cores (cpu.max / cfs quota).
        public var cpu: Double? = nil
        /// Relative CPU weight 1...10000 (100 is the default of every cgroup).
        public var cpuWeight: Int? = nil
        public var upperSize: ByteSize? = .mebibytes(256)
        public var upperInodes: Int? = 65536
        public var shmSize: ByteSize? = .mebibytes(64)
        /// Seconds after which the whole sandbox is killed; nil: no limit. Under a drone, the
        /// backend's lifetime: it is then terminated (reason lifetime) with its grace period.
        public var wallTimeout: Int? = nil
        /// Seconds a backend may go without an open connection before a drone terminates it
        /// (reason idle); nil: never. Only drones use it.
        public var idleTimeout: Int? = nil

        /// No value set: the maxima default.
        public static let unset = Limits(
            memoryMax: nil, memoryHigh: nil, swapMax: nil, pidsMax: nil, cpu: nil, cpuWeight: nil, upperSize: nil,
            upperInodes: nil, shmSize: nil, wallTimeout: nil, idleTimeout: nil)

        public init(
            memoryMax: ByteSize? = .mebibytes(512), memoryHigh: ByteSize? = nil, swapMax: ByteSize? = .mebibytes(0),
            pidsMax: Int? = 256, cpu: Double? = nil, cpuWeight: Int? = nil, upperSize: ByteSize? = .mebibytes(256),
            upperInodes: Int? = 65536, shmSize: ByteSize? = .mebibytes(64), wallTimeout: Int? = nil,
            idleTimeout: Int? = nil
        ) {
            self.memoryMax = memoryMax
            self.memoryHigh = memoryHigh
            self.swapMax = swapMax
            self.pidsMax = pidsMax
            self.cpu = cpu
            self.cpuWeight = cpuWeight
            self.upperSize = upperSize
            self.upperInodes = upperInodes
            self.shmSize = shmSize
            self.wallTimeout = wallTimeout
            self.idleTimeout = idleTimeout
        }
    }

    public struct Filesystem: Sendable, Equatable {
        public typealias Upper = UpperLayer

        public var upper = Upper.tmpfs
        public var readOnlyRoot = false
        public var mounts: [Mount] = []
        /// Where a per-key data directory is mounted read-write inside; nil: none.
        public var dataDirectory: String? = nil
    }

    /// A mount of `[[filesystem.mounts]]`: the sandbox's own kind; a bind's source must
    /// lie below an operator-allowed directory (checked when a spec is made).
    public typealias Mount = SandboxMount

    public struct Network: Sendable, Equatable {
        public enum Mode: String, Sendable {
            /// Loopback only.
            case none
        }

        public var mode = Mode.none
    }

    /// How a drone runs the image as a backend (`[backend]`).
    public struct Backend: Sendable, Equatable {
        /// How a drone tells that a backend is ready.
        public enum Probe: String, Sendable, CaseIterable {
            /// Any HTTP response to `HEAD / HTTP/1.1` on its port.
            case http
            /// A TCP connection accepted on its port.
            case tcp
        }

        /// The port the command listens on inside (PORT), reached through the drone's ingress.
        public var port = 8080
        public var probe = Probe.http
        /// Seconds from spawn to ready at most; then the backend ends (startup-timeout).
        public var startupTimeout = 60
        /// Seconds between SIGTERM and the kill of everything left.
        public var grace = 10
        /// How much of its stdout and stderr a drone keeps in memory.
        public var logBuffer = ByteSize.mebibytes(1)
    }

    public struct Seccomp: Sendable, Equatable {
        /// "default" or the path of an OCI/Docker seccomp JSON profile.
        public var base = "default"
        /// Rules added to the base: allowed calls (optionally only with matching arguments).
        public var allow: [SyscallRule] = []
        /// Rules added to the base: refused calls (optionally only with matching arguments).
        public var deny: [SyscallRule] = []
        /// The errno of a known call that is not allowed; nil: the base profile's (EPERM for
        /// the default profile).
        public var errno: Int32? = nil
        /// Log refused calls to the kernel's audit log.
        public var logDenied = false
    }

    /// One system call, optionally only when its arguments match (all of at most two).
    public struct SyscallRule: Sendable, Equatable {
        public var name: String
        public var conditions: [SeccompProfile.ArgumentMatch.Condition]
        /// For deny rules: the errno instead of the policy's.
        public var errno: Int32?
    }

    public struct Capabilities: Sendable, Equatable {
        /// Capability names (without CAP_), inside the sandbox's user namespace.
        public var keep: [String] = []
    }
}
