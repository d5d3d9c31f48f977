import Glibc
import HangarCore
import HangarSandbox
import TOMLKit

/// Reads the sections of one policy file onto a policy (its base already applied).
struct PolicyReader {
    let root: TableReader
    /// The file's directory, for relative paths in it.
    let directory: String

    func read(into policy: inout Policy) throws(PolicyError) {
        if let process = try root.table("process") { try readProcess(process, into: &policy.process) }
        if let limits = try root.table("limits") {
            try readLimits(limits, into: &policy.limits)
            if let maxima = try limits.table("max") {
                try readLimits(maxima, into: &policy.maxima)
                try maxima.finish()
            }
            try limits.finish()
        }
        if let filesystem = try root.table("filesystem") { try readFilesystem(filesystem, into: &policy.filesystem) }
        if let network = try root.table("network") { try readNetwork(network, into: &policy.network) }
        if let backend = try root.table("backend") { try readBackend(backend, into: &policy.backend) }
        if let seccomp = try root.table("seccomp") { try readSeccomp(seccomp, into: &policy.seccomp) }
        if let capabilities = try root.table("capabilities") {
            try readCapabilities(capabilities, into: &policy.capabilities)
        }
        try root.finish()
    }

    // MARK: [process]

    private func readProcess(_ t: TableReader, into process: inout Policy.Process) throws(PolicyError) {
        let command = try t.string("command")
        let args = try t.strings("args")
        if let command {
            guard !command.isEmpty, !command.utf8.contains(0) else {
                throw t.error("command", "must be a non-empty program name or path without NUL")
            }
            process.command = [command] + (args ?? [])
        } else if let args {
            guard !process.command.isEmpty else { throw t.error("args", "args without a command") }
            process.command = [process.command[0]] + args
        }
        for (index, arg) in (args ?? []).enumerated() where arg.utf8.contains(0) {
            throw t.error("args[\(index)]", "contains a NUL byte")
        }
        if let env = try t.stringTable("env") {
            for (name, value) in env {
                guard !name.isEmpty, !name.contains("="), !name.utf8.contains(0) else {
                    throw t.error("env.\(name)", "a variable name must be non-empty, without '=' or NUL")
                }
                guard !value.utf8.contains(0) else { throw t.error("env.\(name)", "the value contains a NUL byte") }
                process.environment.removeAll { $0.name == name }
                process.environment.append(Policy.Variable(name: name, value: value))
            }
            process.environment.sort { $0.name < $1.name }
        }
        if let workdir = try t.string("workdir") {
            process.workdir = try absolutePath(workdir, t, "workdir")
        }
        // Root of the user namespace maps 65536 ids: 0...65535 exist inside.
        if let uid = try t.integer("uid", in: 0...65535) { process.uid = UInt32(uid) }
        if let gid = try t.integer("gid", in: 0...65535) { process.gid = UInt32(gid) }
        if t.contains("umask") {
            guard let text = try? t.string("umask") else {
                throw t.error("umask", "write it as a string of octal digits, e.g. \"022\"")
            }
            guard !text.isEmpty, text.count <= 4, text.allSatisfy({ ("0"..."7").contains($0) }),
                let mask = UInt32(text, radix: 8), mask <= 0o777
            else {
                throw t.error("umask", "expected octal digits 000...777, e.g. \"022\", got \"\(text.prefix(16))\"")
            }
            process.umask = mask
        }
        if let rlimits = try t.table("rlimits") {
            try readRlimits(rlimits, into: &process.rlimits)
        }
        try t.finish()
    }

    private func readRlimits(_ t: TableReader, into r: inout Policy.Rlimits) throws(PolicyError) {
        // Every limit is soft and hard at once: the command cannot raise it.
        if let n = try t.integer("nofile", in: 16...1_048_576) { r.nofile = UInt64(n) }
        if let n = try t.integer("nproc", in: 1...4_194_304) { r.nproc = UInt64(n) }
        if let size = try t.size("core", in: 0...(1 << 40)) { r.core = size.bytes }
        if let size = try t.size("fsize", in: (1 << 10)...(1 << 50)) { r.fsize = size.bytes }
        if let size = try t.size("as", in: (16 << 20)...(1 << 50)) { r.addressSpace = size.bytes }
        if let seconds = try t.duration("cpu", in: 1...(365 * 86400)) { r.cpuSeconds = UInt64(seconds) }
        try t.finish()
    }

    // MARK: [limits]

    private func readLimits(_ t: TableReader, into l: inout Policy.Limits) throws(PolicyError) {
        if let size = try t.size("memory_max", in: (4 << 20)...(1 << 50)) { l.memoryMax = size }
        if let size = try t.size("memory_high", in: (4 << 20)...(1 << 50)) { l.memoryHigh = size }
        if let size = try t.size("swap_max", in: 0...(1 << 50)) { l.swapMax = size }
        if let n = try t.integer("pids_max", in: 1...4_194_304) { l.pidsMax = n }
        if let cores = try t.number("cpu", in: 0.01...1024) { l.cpu = cores }
        if let weight = try t.integer("cpu_weight", in: 1...10000) { l.cpuWeight = weight }
        if let size = try t.size("upper_size", in: (1 << 20)...(1 << 44)) { l.upperSize = size }
        if let n = try t.integer("upper_inodes", in: 64...(1 << 32)) { l.upperInodes = n }
        if let size = try t.size("shm_size", in: (64 << 10)...(1 << 40)) { l.shmSize = size }
        if let seconds = try t.duration("wall_timeout", in: 1...(30 * 86400)) { l.wallTimeout = seconds }
        if let seconds = try t.duration("idle_timeout", in: 1...(30 * 86400)) { l.idleTimeout = seconds }
    }

    // MARK: [filesystem]

    private func readFilesystem(_ t: TableReader, into fs: inout Policy.Filesystem) throws(PolicyError) {
        if let upper = try t.string("upper") {
            guard let value = Policy.Filesystem.Upper(rawValue: upper) else {
                throw t.error("upper", "expected \"tmpfs\" or \"disk\", got \"\(upper)\"")
            }
            fs.upper = value
        }
        if let readOnly = try t.bool("read_only_root") { fs.readOnlyRoot = readOnly }
        if let data = try t.string("data_dir") { fs.dataDirectory = try absolutePath(data, t, "data_dir") }
        if let mounts = try t.tables("mounts") {
            fs.mounts = []
            for mount in mounts {
                fs.mounts.append(try readMount(mount))
            }
        }
        var targets: [String: String] = [:]
        for (index, mount) in fs.mounts.enumerated() {
            let key = "mounts[\(index)].target"
            if Self.isReserved(mount.target) {
                throw t.error(key, "\(mount.target) is managed by Hangar (/proc, /dev and /sys are not for mounts)")
            }
            if let earlier = targets[mount.target] {
                throw t.error(key, "\(mount.target) is already the target of \(t.keyPath(earlier))")
            }
            targets[mount.target] = key
        }
        if let data = fs.dataDirectory {
            if data == "/" { throw t.error("data_dir", "cannot be /") }
            if Self.isReserved(data) {
                throw t.error("data_dir", "\(data) is managed by Hangar (/proc, /dev and /sys are not for mounts)")
            }
            if let clash = targets[data] { throw t.error("data_dir", "\(data) is already the target of \(t.keyPath(clash))") }
        }
        try t.finish()
    }

    static let reservedTargets = ["/proc", "/dev", "/sys"]

    static func isReserved(_ target: String) -> Bool {
        reservedTargets.contains { target == $0 || target.hasPrefix($0 + "/") }
    }

    private func readMount(_ t: TableReader) throws(PolicyError) -> Policy.Mount {
        guard let type = try t.string("type") else { throw t.error("type", "missing; expected \"bind\" or \"tmpfs\"") }
        guard let target = try t.string("target") else { throw t.error("target", "missing") }
        let path = try absolutePath(target, t, "target")
        guard path != "/" else { throw t.error("target", "cannot be /") }
        let mount: Policy.Mount
        switch type {
        case "bind":
            guard let source = try t.string("source") else { throw t.error("source", "missing: a host path") }
            guard source.hasPrefix("/"), !source.utf8.contains(0), !source.split(separator: "/").contains("..") else {
                throw t.error("source", "must be an absolute host path without \"..\", got \"\(source)\"")
            }
            mount = .bind(source: source, target: path, readOnly: try t.bool("read_only") ?? true)
        case "tmpfs":
            let size = try t.size("size", in: (64 << 10)...(1 << 40)) ?? .mebibytes(64)
            mount = .tmpfs(target: path, size: size)
        default:
            throw t.error("type", "expected \"bind\" or \"tmpfs\", got \"\(type)\"")
        }
        try t.finish()
        return mount
    }

    // MARK: [network]

    private func readNetwork(_ t: TableReader, into network: inout Policy.Network) throws(PolicyError) {
        if let mode = try t.string("mode") {
            guard let value = Policy.Network.Mode(rawValue: mode) else {
                throw t.error("mode", "expected \"none\" (loopback only; egress modes are not available yet), got \"\(mode)\"")
            }
            network.mode = value
        }
        try t.finish()
    }

    // MARK: [backend]

    private func readBackend(_ t: TableReader, into backend: inout Policy.Backend) throws(PolicyError) {
        if let port = try t.integer("port", in: 1...65535) { backend.port = port }
        if let probe = try t.string("probe") {
            guard let value = Policy.Backend.Probe(rawValue: probe) else {
                throw t.error("probe", "expected \"http\" (any HTTP response) or \"tcp\" (an accepted connection), got \"\(probe)\"")
            }
            backend.probe = value
        }
        if let seconds = try t.duration("startup_timeout", in: 1...3600) { backend.startupTimeout = seconds }
        if let seconds = try t.duration("grace", in: 0...3600) { backend.grace = seconds }
        if let size = try t.size("log_buffer", in: (4 << 10)...(64 << 20)) { backend.logBuffer = size }
        try t.finish()
    }

    // MARK: [seccomp]

    private func readSeccomp(_ t: TableReader, into seccomp: inout Policy.Seccomp) throws(PolicyError) {
        if let base = try t.string("base") {
            if base == "default" {
                seccomp.base = base
            } else {
                guard base.hasSuffix(".json") else {
                    throw t.error("base", "expected \"default\" or the path of an OCI seccomp profile (.json), got \"\(base)\"")
                }
                let relative = base.hasPrefix("/") ? base : directory + "/" + base
                // Absolute, so that the profile does not depend on the current directory.
                let path = realpath(relative, nil).map { resolved in
                    defer { free(resolved) }
                    return String(cString: resolved)
                } ?? relative
                // Read now, so that a bad profile is this key's error.
                do {
                    _ = try OCISeccompProfile.load(path: path)
                } catch {
                    throw t.error("base", error.description)
                }
                seccomp.base = path
            }
        }
        if let name = try t.string("errno") {
            guard let value = errnoValue(named: name) else {
                throw t.error("errno", "unknown errno \"\(name)\"; expected a name such as \"EPERM\"")
            }
            seccomp.errno = value
        }
        if let log = try t.bool("log_denied") { seccomp.logDenied = log }
        if let allow = try t.values("allow") {
            seccomp.allow = []
            for (index, value) in allow.enumerated() {
                seccomp.allow.append(try readRule(value, t, "allow[\(index)]", allowing: true))
            }
        }
        if let deny = try t.values("deny") {
            seccomp.deny = []
            for (index, value) in deny.enumerated() {
                seccomp.deny.append(try readRule(value, t, "deny[\(index)]", allowing: false))
            }
        }
        try t.finish()
    }

    private func readRule(_ value: TOMLValue, _ t: TableReader, _ key: String, allowing: Bool) throws(PolicyError) -> Policy.SyscallRule {
        let rule: Policy.SyscallRule
        if let name = value.string {
            rule = Policy.SyscallRule(name: name, conditions: [], errno: nil)
        } else if let table = value.table {
            let r = TableReader(table, path: t.keyPath(key), document: t.document)
            guard let name = try r.string("name") else { throw r.error("name", "missing: the system call's name") }
            var conditions: [SeccompProfile.ArgumentMatch.Condition] = []
            for argument in try r.tables("args") ?? [] {
                let index = try argument.integer("index", in: 0...5)
                guard let index else { throw argument.error("index", "missing: the argument's index 0...5") }
                let op = try argument.string("op") ?? "eq"
                guard let valueNumber = try argument.integer("value", in: 0...Int.max) else {
                    throw argument.error("value", "missing")
                }
                let mask: UInt64
                switch op {
                case "eq":
                    if argument.contains("mask") { throw argument.error("mask", "only op = \"masked_eq\" takes a mask") }
                    mask = ~0
                case "masked_eq":
                    guard let m = try argument.integer("mask", in: 1...Int.max) else {
                        throw argument.error("mask", "missing: masked_eq compares (argument & mask) with value")
                    }
                    mask = UInt64(m)
                default:
                    throw argument.error("op", "expected \"eq\" or \"masked_eq\", got \"\(op)\"")
                }
                try argument.finish()
                conditions.append(.init(argument: UInt32(index), mask: mask, value: UInt64(valueNumber)))
            }
            guard conditions.count <= 2 else { throw r.error("args", "at most two argument conditions per rule") }
            var errno: Int32?
            if let errnoName = try r.string("errno") {
                guard !allowing else { throw r.error("errno", "only deny rules take an errno") }
                guard let value = errnoValue(named: errnoName) else {
                    throw r.error("errno", "unknown errno \"\(errnoName)\"")
                }
                errno = value
            }
            try r.finish()
            rule = Policy.SyscallRule(name: name, conditions: conditions, errno: errno)
        } else {
            throw t.error(key, "expected a system call name or a table {name, args, errno}, got \(describe(value))")
        }
        guard SeccompProfile.knows(rule.name) else {
            throw t.error(key, "unknown system call \"\(rule.name)\" on this architecture")
        }
        if allowing && SeccompProfile.mustBlock.contains(rule.name) {
            throw t.error(key, "\"\(rule.name)\" is in the must-block set and can never be allowed")
        }
        if rule.name == "clone3" {
            throw t.error(
                key, "clone3 always answers ENOSYS (seccomp cannot read its flags; libc falls back to clone)")
        }
        return rule
    }

    // MARK: [capabilities]

    private func readCapabilities(_ t: TableReader, into capabilities: inout Policy.Capabilities) throws(PolicyError) {
        if let keep = try t.strings("keep") {
            var names: [String] = []
            for (index, raw) in keep.enumerated() {
                let name = raw.uppercased().hasPrefix("CAP_") ? String(raw.uppercased().dropFirst(4)) : raw.uppercased()
                guard Policy.Capabilities.keepable.contains(name) else {
                    let reason =
                        Policy.Capabilities.known.contains(name)
                        ? "CAP_\(name) cannot be kept: it reaches kernel surface a sandbox must not have; keepable: "
                            + Policy.Capabilities.keepable.sorted().joined(separator: ", ")
                        : "unknown capability \"\(raw)\""
                    throw t.error("keep[\(index)]", reason)
                }
                if !names.contains(name) { names.append(name) }
            }
            capabilities.keep = names
        }
        try t.finish()
    }

    // MARK: helpers

    private func absolutePath(_ path: String, _ t: TableReader, _ key: String) throws(PolicyError) -> String {
        guard path.utf8.count < 4096 else { throw t.error(key, "must be at most 4095 bytes, got \(path.utf8.count)") }
        guard path.hasPrefix("/"), !path.utf8.contains(0) else {
            throw t.error(key, "must be an absolute path, got \"\(path)\"")
        }
        let parts = path.split(separator: "/")
        guard !parts.contains(".."), !parts.contains(".") else {
            throw t.error(key, "must not contain \".\" or \"..\" components, got \"\(path)\"")
        }
        return "/" + parts.joined(separator: "/")
    }
}

extension Policy.Capabilities {
    /// Capabilities a policy may keep (see `Capability.keepable`).
    public static var keepable: Set<String> { Set(Capability.keepable.map(\.name)) }

    /// Every capability name of Linux.
    static let known: Set<String> = [
        "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP",
        "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER",
        "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
        "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP",
        "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF",
        "CHECKPOINT_RESTORE",
    ]
}
