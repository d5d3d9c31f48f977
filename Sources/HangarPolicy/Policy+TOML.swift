import HangarCore
import HangarSandbox

extension Policy {
    /// The effective policy as a TOML policy file: every field, defaults included. Read
    /// back, it gives the same policy.
    public var toml: String {
        var out = TOMLWriter()
        out.comment("effective policy \"\(name)\"" + (files.isEmpty ? " (built-in defaults)" : " from " + files.joined(separator: ", ")))
        out.table("process")
        if let command = process.command.first {
            out.set("command", string: command)
            out.set("args", strings: Array(process.command.dropFirst()))
        }
        out.set("workdir", string: process.workdir)
        out.set("uid", Int(process.uid))
        out.set("gid", Int(process.gid))
        out.set("umask", string: String(process.umask, radix: 8).leftPadded(to: 3))
        out.table("process.env")
        for variable in process.environment { out.set(variable.name, string: variable.value) }
        out.table("process.rlimits")
        out.set("nofile", Int(process.rlimits.nofile))
        if let nproc = process.rlimits.nproc { out.set("nproc", Int(nproc)) }
        out.set("core", size: ByteSize(bytes: process.rlimits.core))
        if let fsize = process.rlimits.fsize { out.set("fsize", size: ByteSize(bytes: fsize)) }
        if let size = process.rlimits.addressSpace { out.set("as", size: ByteSize(bytes: size)) }
        if let cpu = process.rlimits.cpuSeconds { out.set("cpu", Int(cpu)) }

        out.table("limits")
        out.limits(limits)
        out.table("limits.max")
        out.limits(maxima)

        out.table("filesystem")
        out.set("upper", string: filesystem.upper.rawValue)
        out.set("read_only_root", filesystem.readOnlyRoot)
        if let data = filesystem.dataDirectory { out.set("data_dir", string: data) }
        for mount in filesystem.mounts {
            out.arrayTable("filesystem.mounts")
            switch mount {
            case .bind(let source, let target, let readOnly):
                out.set("type", string: "bind")
                out.set("source", string: source)
                out.set("target", string: target)
                out.set("read_only", readOnly)
            case .tmpfs(let target, let size):
                out.set("type", string: "tmpfs")
                out.set("target", string: target)
                out.set("size", size: size)
            }
        }

        out.table("network")
        out.set("mode", string: network.mode.rawValue)

        out.table("backend")
        out.set("port", backend.port)
        out.set("probe", string: backend.probe.rawValue)
        out.set("startup_timeout", string: "\(backend.startupTimeout)s")
        out.set("grace", string: "\(backend.grace)s")
        out.set("log_buffer", size: backend.logBuffer)

        out.table("seccomp")
        out.set("base", string: seccomp.base)
        if let errno = seccomp.errno { out.set("errno", string: errnoSymbol(errno)) }
        out.set("log_denied", seccomp.logDenied)
        out.rules("allow", seccomp.allow)
        out.rules("deny", seccomp.deny)

        out.table("capabilities")
        out.set("keep", strings: capabilities.keep)
        return out.text
    }
}

/// Writes TOML line by line.
struct TOMLWriter {
    private(set) var text = ""

    mutating func comment(_ line: String) { text += "# \(line)\n" }

    mutating func table(_ name: String) { text += "\n[\(name)]\n" }

    mutating func arrayTable(_ name: String) { text += "\n[[\(name)]]\n" }

    mutating func set(_ key: String, raw: String) { text += "\(Self.key(key)) = \(raw)\n" }

    mutating func set(_ key: String, string: String) { set(key, raw: Self.quote(string)) }

    mutating func set(_ key: String, _ value: Int) { set(key, raw: "\(value)") }

    mutating func set(_ key: String, _ value: Bool) { set(key, raw: "\(value)") }

    mutating func set(_ key: String, size: ByteSize) { set(key, string: "\(size)") }

    mutating func set(_ key: String, strings: [String]) {
        set(key, raw: "[" + strings.map(Self.quote).joined(separator: ", ") + "]")
    }

    mutating func limits(_ limits: Policy.Limits) {
        for field in Policy.Limits.fields {
            guard let value = field.value(limits) else { continue }
            switch field.key {
            case "cpu": set(field.key, raw: "\(value)")
            case "wall_timeout", "idle_timeout": set(field.key, string: "\(Int(value))s")
            case "pids_max", "cpu_weight", "upper_inodes": set(field.key, Int(value))
            default: set(field.key, size: ByteSize(bytes: UInt64(value)))
            }
        }
    }

    mutating func rules(_ key: String, _ rules: [Policy.SyscallRule]) {
        let items = rules.map { rule -> String in
            guard !rule.conditions.isEmpty || rule.errno != nil else { return Self.quote(rule.name) }
            var fields = ["name = \(Self.quote(rule.name))"]
            if !rule.conditions.isEmpty {
                let args = rule.conditions.map { c in
                    c.mask == ~0
                        ? "{ index = \(c.argument), op = \"eq\", value = \(c.value) }"
                        : "{ index = \(c.argument), op = \"masked_eq\", value = \(c.value), mask = \(c.mask) }"
                }
                fields.append("args = [" + args.joined(separator: ", ") + "]")
            }
            if let errno = rule.errno { fields.append("errno = \(Self.quote(errnoSymbol(errno)))") }
            return "{ " + fields.joined(separator: ", ") + " }"
        }
        set(key, raw: "[" + items.joined(separator: ", ") + "]")
    }

    static func key(_ key: String) -> String {
        let bare = !key.isEmpty && key.unicodeScalars.allSatisfy { $0.properties.isASCIIHexDigit || ("a"..."z").contains($0) || ("A"..."Z").contains($0) || $0 == "_" || $0 == "-" || ("0"..."9").contains($0) }
        return bare ? key : quote(key)
    }

    static func quote(_ s: String) -> String {
        var out = ""
        appendQuoted(s, to: &out)
        return out
    }
}

