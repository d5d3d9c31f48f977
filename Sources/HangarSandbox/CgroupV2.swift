import Glibc
import HangarCore
import Synchronization

/// cgroup v2: one group per sandbox on the unified hierarchy, with memory.max/high,
/// memory.swap.max, pids.max, cpu.max, cpu.weight and memory.oom.group = 1 (an OOM kill
/// takes the whole sandbox, not one of its processes). Teardown uses cgroup.kill.
///
/// v2 allows processes only in leaves once controllers are enabled below a group: if
/// the supervisor's own group holds processes, the supervisor moves itself into a leaf
/// `<own>/supervisor` first (in a systemd unit this needs `Delegate=yes`).
final class CgroupV2Driver: CgroupDriver {
    let version = "v2"
    let parent: String
    let runtime: String
    /// The controllers enabled for sandboxes.
    let controllers: Set<String>

    init(parent: String, runtime: String, controllers: Set<String>) {
        self.parent = parent
        self.runtime = runtime
        self.controllers = controllers
    }

    static let wanted = ["memory", "pids", "cpu"]

    /// The cgroup2 mount point and this process's group on it.
    static func unified() -> (mount: String, own: String)? {
        guard let mounts = readText("/proc/self/mounts"), let membership = readText("/proc/self/cgroup") else {
            return nil
        }
        guard let mount = mounts.split(separator: "\n").map({ $0.split(separator: " ") })
            .first(where: { $0.count >= 3 && $0[2] == "cgroup2" })?[1]
        else { return nil }
        guard let own = membership.split(separator: "\n").first(where: { $0.hasPrefix("0::") })?.dropFirst(3) else {
            return nil
        }
        return (String(mount), String(own))
    }

    /// Whether the unified hierarchy has the memory controller for this process's group.
    static func unifiedHasMemory() -> Bool {
        guard let (mount, own) = unified() else { return false }
        let controllers = readText(mount + (own == "/" ? "" : own) + "/cgroup.controllers") ?? ""
        return controllers.split(whereSeparator: { $0 == " " || $0 == "\n" }).contains("memory")
    }

    /// Prepares `<base>/<parent>/<runtime>` with the controllers enabled down to it.
    static func discover(parentName: String, root: String?, runtime: String) throws(SandboxError) -> CgroupV2Driver {
        guard let (mount, own) = unified() else {
            throw SandboxError(.host, "cgroup v2 was asked for, and no cgroup2 file system is mounted")
        }
        // A process that moved itself into `<own>/supervisor` (an earlier runtime of it) keeps
        // `<own>` as its base.
        let ownBase = own.hasSuffix("/supervisor") ? String(own.dropLast("/supervisor".count)) : own
        // A configured root is relative to the cgroup2 mount, as on v1.
        let base = root.map { mount + ($0.hasPrefix("/") ? $0 : "/" + $0) } ?? mount + (ownBase == "/" ? "" : ownBase)
        let available = Set(words(readText(base + "/cgroup.controllers")))
        let controllers = Set(wanted).intersection(available)
        guard controllers.contains("memory") || controllers.contains("pids") else {
            throw SandboxError(
                .host, "cgroup v2 at \(base) offers neither the memory nor the pids controller (it has: \(available.sorted().joined(separator: " ")))")
        }
        let enable = controllers.sorted().map { "+" + $0 }.joined(separator: " ")
        let enabled = Set(words(readText(base + "/cgroup.subtree_control")))
        if !controllers.isSubset(of: enabled) {
            // Leaves only: if this group has processes, move ourselves into a leaf first.
            if !(readText(base + "/cgroup.procs") ?? "").isEmpty {
                let leaf = base + "/supervisor"
                if mkdir(leaf, 0o755) < 0 && errno != EEXIST {
                    throw .system(.host, "creating cgroup \(leaf)", errno: errno)
                }
                if let err = writeText(leaf + "/cgroup.procs", "\(getpid())") {
                    throw .system(.host, "moving the supervisor into \(leaf)", errno: err)
                }
            }
            if let err = writeText(base + "/cgroup.subtree_control", enable) {
                let hint = err == EBUSY ? " (other processes share \(base): give hangar a cgroup of its own)" : ""
                throw .system(.host, "enabling \(enable) in \(base)/cgroup.subtree_control\(hint)", errno: err)
            }
        }
        let parent = base + "/" + parentName
        for directory in [parent, parent + "/" + runtime] {
            if mkdir(directory, 0o755) < 0 && errno != EEXIST {
                throw .system(.host, "creating cgroup \(directory)", errno: errno)
            }
            if let err = writeText(directory + "/cgroup.subtree_control", enable) {
                throw .system(.host, "enabling \(enable) in \(directory)/cgroup.subtree_control", errno: err)
            }
        }
        return CgroupV2Driver(parent: parent, runtime: runtime, controllers: controllers)
    }

    func create(name: String, limits: ResourceLimits) throws(SandboxError) -> any SandboxCgroup {
        for (needed, controller) in [
            (limits.memoryMax != nil || limits.memoryHigh != nil || limits.swapMax != nil, "memory"),
            (limits.pidsMax != nil, "pids"), (limits.cpu != nil || limits.cpuWeight != nil, "cpu"),
        ] where needed && !controllers.contains(controller) {
            throw SandboxError(.host, "the \(controller) controller is not available on cgroup v2 here")
        }
        let path = parent + "/" + runtime + "/" + name
        guard mkdir(path, 0o755) == 0 else { throw .system(.host, "creating cgroup \(path)", errno: errno) }
        let group = CgroupV2Group(path: path)
        for (file, value) in Self.settings(limits, controllers: controllers, path: path) {
            if let err = writeText(path + "/" + file, value) {
                group.destroy()
                throw .system(.host, "setting \(path)/\(file) to \(value)", errno: err)
            }
        }
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else {
            let err = errno
            group.destroy()
            throw .system(.host, "opening cgroup \(path)", errno: err)
        }
        group.set(fd: fd)
        return group
    }

    static func settings(_ limits: ResourceLimits, controllers: Set<String>, path: String) -> [(String, String)] {
        var settings: [(String, String)] = []
        if controllers.contains("memory") {
            if let max = limits.memoryMax { settings.append(("memory.max", "\(max.bytes)")) }
            if let high = limits.memoryHigh { settings.append(("memory.high", "\(high.bytes)")) }
            // memory.swap.max exists only with swap accounting; without it swap is not limited.
            if let swap = limits.swapMax, access(path + "/memory.swap.max", F_OK) == 0 {
                settings.append(("memory.swap.max", "\(swap.bytes)"))
            }
            settings.append(("memory.oom.group", "1"))
        }
        if controllers.contains("pids"), let pids = limits.pidsMax { settings.append(("pids.max", "\(pids)")) }
        if controllers.contains("cpu") {
            if let cores = limits.cpu { settings.append(("cpu.max", "\(max(1000, Int((cores * 100_000).rounded()))) 100000")) }
            if let weight = limits.cpuWeight { settings.append(("cpu.weight", "\(weight)")) }
        }
        return settings
    }

    func sweep() {
        for runtimeDirectory in directoryEntries(parent) where Cgroups.runtimeIsGone(runtimeDirectory) {
            let path = parent + "/" + runtimeDirectory
            for sandbox in Cgroups.sandboxEntries(of: path) { CgroupV2Group(path: path + "/" + sandbox).destroy() }
            rmdir(path)
        }
    }

    func removeRuntimeDirectory() { rmdir(parent + "/" + runtime) }
}

func words(_ text: String?) -> [String] {
    (text ?? "").split(whereSeparator: { $0 == " " || $0 == "\n" }).map(String.init)
}

/// One sandbox's group on v2.
final class CgroupV2Group: SandboxCgroup {
    let path: String
    private let fd = Mutex<Int32?>(nil)

    init(path: String) { self.path = path }

    func set(fd: Int32) { self.fd.withLock { $0 = fd } }

    var joinFDs: [Int32] { [] }
    var directoryFD: Int32? { fd.withLock { $0 } }

    func statistics() -> CgroupStatistics {
        let events = readText(path + "/memory.events")
        let oom = max(keyedValue(events, "oom_kill") ?? 0, keyedValue(events, "oom_group_kill") ?? 0)
        return CgroupStatistics(
            peakMemory: readText(path + "/memory.peak").flatMap { UInt64($0.trimmingNewline()) }.map {
                ByteSize(bytes: $0)
            },
            cpuTime: keyedValue(readText(path + "/cpu.stat"), "usage_usec").map { .microseconds(Int64($0)) },
            oomKills: Int(oom),
            currentMemory: readText(path + "/memory.current").flatMap { UInt64($0.trimmingNewline()) }.map {
                ByteSize(bytes: $0)
            })
    }

    /// Kills what is left with cgroup.kill, waits until the group is empty, removes it.
    func destroy() {
        if let open = fd.withLock({ fd in defer { fd = nil }; return fd }) { close(open) }
        guard access(path, F_OK) == 0 else { return }
        if keyedValue(readText(path + "/cgroup.events"), "populated") == 1 {
            if writeText(path + "/cgroup.kill", "1") != nil {
                for pid in (readText(path + "/cgroup.procs") ?? "").split(separator: "\n").compactMap({ pid_t($0) }) {
                    kill(pid, SIGKILL)
                }
            }
            for _ in 0..<200 where keyedValue(readText(path + "/cgroup.events"), "populated") == 1 {
                usleep(5000)
            }
        }
        Cgroups.remove(path)
    }
}
