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
        if upperSize.bytes < 1 << 20 { throw .invalid("upper size", "at least 1m, got \(upperSize)") }
    }
}

/// Limits enforced through cgroups.
public struct ResourceLimits: Sendable, Hashable {
    /// Hard memory limit (memory.max, or memory.limit_in_bytes on v1); nil: none.
    public var memoryMax: ByteSize?
    /// Maximum number of tasks (pids.max); nil: none.
    public var pidsMax: Int?

    /// Limits; none set by default.
    public init(memoryMax: ByteSize? = nil, pidsMax: Int? = nil) {
        self.memoryMax = memoryMax
        self.pidsMax = pidsMax
    }

    var isEmpty: Bool { memoryMax == nil && pidsMax == nil }
}
