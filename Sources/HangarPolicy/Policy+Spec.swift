import Glibc
import HangarCore
import HangarSandbox

extension Policy {
    /// Checks what no single key can: limits against each other and against their maxima.
    /// A conflict is reported at the key set last (in the extending file, or further down),
    /// naming where the other value came from when that is another file.
    func validate(origins: Origins, fallback file: String) throws(PolicyError) {
        func conflict(_ a: String, _ b: String, _ aText: String, _ bText: String, above: Bool) -> PolicyError {
            let placeA = origins.place(of: a)
            let placeB = origins.place(of: b)
            // Blame a (set later) unless b was set after it.
            let blameB = (placeB?.order ?? -1) > (placeA?.order ?? -1)
            let (key, value, other, otherValue, place, otherPlace) =
                blameB ? (b, bText, a, aText, placeB, placeA) : (a, aText, b, bText, placeA, placeB)
            let relation = (above != blameB) ? "above" : "below"
            var whereFrom = ""
            if let otherPlace, otherPlace.file != place?.file {
                whereFrom = " in \(otherPlace.file)" + (otherPlace.line.map { ":\($0)" } ?? "")
            }
            return PolicyError(
                file: place?.file ?? file, line: place?.line, key: key,
                reason: "\(value) is \(relation) \(other) (\(otherValue)\(whereFrom))")
        }
        if let high = limits.memoryHigh, let max = limits.memoryMax, high > max {
            throw conflict("limits.memory_high", "limits.memory_max", "\(high)", "\(max)", above: true)
        }
        for field in Limits.fields {
            guard let maximum = field.value(maxima), let value = field.value(limits), value > maximum else { continue }
            throw conflict(
                "limits.\(field.key)", "limits.max.\(field.key)", field.format(value), field.format(maximum), above: true)
        }
    }

    /// This policy with the limits a request asks for. A request may lower any limit, and
    /// raise one up to `limits.max` (or, without a maximum, not above the policy's value).
    public func applying(request: Limits, from requester: String = "request") throws(PolicyError) -> Policy {
        var result = self
        for field in Limits.fields {
            guard let wanted = field.value(request) else { continue }
            if wanted < field.minimum {
                throw PolicyError(
                    file: requester, key: "limits.\(field.key)",
                    reason: "\(field.format(wanted)) is below the smallest value, \(field.format(field.minimum))")
            }
            if let ceiling = field.value(maxima) ?? field.value(limits), wanted > ceiling {
                let which = field.value(maxima) != nil ? "limits.max.\(field.key)" : "limits.\(field.key)"
                throw PolicyError(
                    file: requester, key: "limits.\(field.key)",
                    reason: "\(field.format(wanted)) is above the policy's maximum \(field.format(ceiling)) (\(which) in \(sources[which] ?? files.last ?? "the built-in defaults"))")
            }
            field.set(&result.limits, wanted)
        }
        // A lower memory_max takes memory_high down with it, keeping the policy's proportion
        // (unless the request set memory_high itself).
        if request.memoryHigh == nil, request.memoryMax != nil, let high = limits.memoryHigh, let max = limits.memoryMax,
            let newMax = result.limits.memoryMax, newMax < max
        {
            result.limits.memoryHigh = ByteSize(bytes: UInt64(Double(newMax.bytes) * Double(high.bytes) / Double(max.bytes)))
        }
        if let high = result.limits.memoryHigh, let max = result.limits.memoryMax, high > max {
            throw PolicyError(
                file: requester, key: "limits.memory_high", reason: "\(high) is above limits.memory_max (\(max))")
        }
        return result
    }

    /// The operator's settings that a policy cannot change.
    public struct HostSettings: Sendable {
        /// Host directories below which a policy may bind paths.
        public var bindSources: [String]

        public init(bindSources: [String] = []) { self.bindSources = bindSources }

        /// From `HANGAR_BIND_SOURCES` (colon-separated), else none.
        public static func fromEnvironment() -> HostSettings {
            guard let value = getenv("HANGAR_BIND_SOURCES") else { return HostSettings() }
            return HostSettings(bindSources: String(cString: value).split(separator: ":").map(String.init))
        }
    }

    /// The sandbox spec for `command` (or the policy's own when nil) in `image`, with a
    /// per-key data directory on the host when the policy mounts one.
    public func spec(
        image: Image, command: [String]? = nil, host: HostSettings = HostSettings(), dataDirectory: String? = nil
    ) throws(PolicyError) -> SandboxSpec {
        let file = files.last ?? name
        let argv = command ?? process.command
        guard !argv.isEmpty else {
            throw PolicyError(file: file, key: "process.command", reason: "no command: the policy has none and none was given")
        }
        var spec = SandboxSpec(image: image, command: argv)
        spec.environment = process.environment.map { ($0.name, $0.value) }
        spec.workingDirectory = process.workdir
        spec.uid = process.uid
        spec.gid = process.gid
        spec.umask = process.umask
        spec.rlimits = process.rlimits.list
        if let size = limits.upperSize { spec.upperSize = size }
        if let inodes = limits.upperInodes { spec.upperInodes = UInt64(inodes) }
        if let size = limits.shmSize { spec.shmSize = size }
        spec.readOnlyRoot = filesystem.readOnlyRoot
        spec.upper = filesystem.upper
        spec.limits = ResourceLimits(
            memoryMax: limits.memoryMax, memoryHigh: limits.memoryHigh, swapMax: limits.swapMax,
            pidsMax: limits.pidsMax, cpu: limits.cpu, cpuWeight: limits.cpuWeight)
        spec.wallTimeout = limits.wallTimeout.map { .seconds($0) }
        spec.keepCapabilities = capabilities.keep.compactMap { Capability(keepable: $0) }
        do {
            spec.seccomp = try seccompProfile()
        } catch {
            throw PolicyError(file: file, key: "seccomp.base", reason: error.description)
        }
        for (index, mount) in filesystem.mounts.enumerated() {
            switch mount {
            case .bind(let source, let target, let readOnly):
                let resolved = try host.allowedSource(source, file: file, key: "filesystem.mounts[\(index)].source")
                spec.mounts.append(.bind(source: resolved, target: target, readOnly: readOnly))
            case .tmpfs:
                spec.mounts.append(mount)
            }
        }
        if let inside = filesystem.dataDirectory {
            guard let dataDirectory else {
                throw PolicyError(
                    file: file, key: "filesystem.data_dir", reason: "the policy mounts a data directory and none was given")
            }
            spec.mounts.append(.bind(source: dataDirectory, target: inside, readOnly: false))
        }
        return spec
    }

    /// The seccomp profile: the base with this policy's additions.
    func seccompProfile() throws(OCISeccompProfile.Invalid) -> SeccompProfile {
        var profile = seccomp.base == "default" ? SeccompProfile.default : try OCISeccompProfile.load(path: seccomp.base)
        profile.name = seccomp.base == "default" ? name : "\(name)+\(profile.name)"
        if let errno = seccomp.errno { profile.defaultErrno = errno }
        profile.logDenied = seccomp.logDenied
        for rule in seccomp.allow {
            if rule.conditions.isEmpty {
                profile.allowed.insert(rule.name)
                profile.errnos[rule.name] = nil
            } else {
                profile.conditionalAllows.append(.init(rule.name, rule.conditions))
            }
        }
        for rule in seccomp.deny {
            if rule.conditions.isEmpty {
                profile.allowed.remove(rule.name)
                profile.conditionalAllows.removeAll { $0.syscall == rule.name }
                profile.errnos[rule.name] = rule.errno ?? profile.defaultErrno
            } else {
                var denial = SeccompProfile.ArgumentMatch(rule.name, rule.conditions)
                denial.errno = rule.errno
                profile.argumentDenials.append(denial)
            }
        }
        return profile
    }
}

extension Policy.HostSettings {
    /// `source` resolved (symlinks followed) when it lies below an allowed directory.
    func allowedSource(_ source: String, file: String, key: String) throws(PolicyError) -> String {
        guard let resolved = realpath(source, nil) else {
            throw PolicyError(file: file, key: key, reason: "\(source) does not exist on this host")
        }
        defer { free(resolved) }
        let path = String(cString: resolved)
        for allowed in bindSources {
            guard let base = realpath(allowed, nil) else { continue }
            defer { free(base) }
            let root = String(cString: base)
            if path == root || path.hasPrefix(root == "/" ? "/" : root + "/") { return path }
        }
        let allowed = bindSources.isEmpty ? "none are allowed (HANGAR_BIND_SOURCES)" : bindSources.joined(separator: ", ")
        throw PolicyError(file: file, key: key, reason: "\(source) is not below a directory the operator allows for binds: \(allowed)")
    }
}

extension Policy.Rlimits {
    /// As the sandbox sets them.
    var list: [Rlimit] {
        // No real-time scheduling, whatever the supervisor's own limit: a SCHED_FIFO spinner
        // is not held by the CFS quota.
        var list = [Rlimit(.nofile, nofile), Rlimit(.core, core), Rlimit(.realtimePriority, 0)]
        if let nproc { list.append(Rlimit(.nproc, nproc)) }
        if let fsize { list.append(Rlimit(.fsize, fsize)) }
        if let addressSpace { list.append(Rlimit(.addressSpace, addressSpace)) }
        if let cpuSeconds { list.append(Rlimit(.cpu, cpuSeconds)) }
        return list
    }
}

extension Policy.Limits {
    /// One limit, generically: its key, how to read, write and print it.
    struct Field {
        let key: String
        /// The smallest value a policy or a request may give it.
        let minimum: Double
        let value: (Policy.Limits) -> Double?
        let set: (inout Policy.Limits, Double) -> Void
        let format: (Double) -> String
    }

    static var fields: [Field] {[
        size("memory_max", \.memoryMax, 4_194_304), size("memory_high", \.memoryHigh, 4_194_304),
        size("swap_max", \.swapMax, 0), count("pids_max", \.pidsMax, 1), cores("cpu", \.cpu, 0.01),
        count("cpu_weight", \.cpuWeight, 1), size("upper_size", \.upperSize, 1_048_576),
        count("upper_inodes", \.upperInodes, 64), size("shm_size", \.shmSize, 65_536),
        seconds("wall_timeout", \.wallTimeout, 1), seconds("idle_timeout", \.idleTimeout, 1),
    ]}

    private static func size(_ key: String, _ path: WritableKeyPath<Policy.Limits, ByteSize?>, _ minimum: Double) -> Field {
        Field(
            key: key, minimum: minimum, value: { $0[keyPath: path].map { Double($0.bytes) } },
            set: { $0[keyPath: path] = ByteSize(bytes: UInt64($1)) }, format: { "\(ByteSize(bytes: UInt64($0)))" })
    }

    private static func count(_ key: String, _ path: WritableKeyPath<Policy.Limits, Int?>, _ minimum: Double) -> Field {
        Field(key: key, minimum: minimum, value: { $0[keyPath: path].map(Double.init) }, set: { $0[keyPath: path] = Int($1) }, format: { "\(Int($0))" })
    }

    private static func seconds(_ key: String, _ path: WritableKeyPath<Policy.Limits, Int?>, _ minimum: Double) -> Field {
        Field(key: key, minimum: minimum, value: { $0[keyPath: path].map(Double.init) }, set: { $0[keyPath: path] = Int($1) }, format: { "\(Int($0))s" })
    }

    private static func cores(_ key: String, _ path: WritableKeyPath<Policy.Limits, Double?>, _ minimum: Double) -> Field {
        Field(key: key, minimum: minimum, value: { $0[keyPath: path] }, set: { $0[keyPath: path] = $1 }, format: { "\($0)" })
    }
}
