import CShims
import Glibc
import HangarCore
import Synchronization

/// cgroup v1: one group per sandbox in each of the memory, pids, cpu(acct) and freezer
/// hierarchies that are mounted, below this process's own group in each (so a drone in a
/// container or a systemd unit stays inside it).
final class CgroupV1Driver: CgroupDriver {
    struct Hierarchy: Sendable {
        /// The controllers mounted together here ("cpu", "cpuacct").
        let controllers: Set<String>
        /// `<mount>/<own cgroup>/<parent>`.
        let parent: String
    }

    static let wanted: Set<String> = ["memory", "pids", "cpu", "cpuacct", "freezer"]

    let version = "v1"
    let hierarchies: [Hierarchy]
    let runtime: String

    init(hierarchies: [Hierarchy], runtime: String) {
        self.hierarchies = hierarchies
        self.runtime = runtime
    }

    /// Finds the mounted v1 controllers and this process's place in each.
    static func discover(parentName: String, root: String?, runtime: String) -> CgroupV1Driver? {
        guard let mounts = readText("/proc/self/mounts"), let membership = readText("/proc/self/cgroup") else {
            return nil
        }
        var ownPaths: [String: String] = [:]
        for line in membership.split(separator: "\n") {
            let fields = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
            guard fields.count == 3 else { continue }
            for controller in fields[1].split(separator: ",") { ownPaths[String(controller)] = String(fields[2]) }
        }
        var hierarchies: [Hierarchy] = []
        for line in mounts.split(separator: "\n") {
            let fields = line.split(separator: " ")
            guard fields.count >= 4, fields[2] == "cgroup" else { continue }
            let controllers = Set(fields[3].split(separator: ",").map(String.init)).intersection(wanted)
            guard let first = controllers.sorted().first, let own = ownPaths[first] else { continue }
            // A configured root is relative to each hierarchy's mount point.
            let base = String(fields[1]) + (root.map { $0.hasPrefix("/") ? $0 : "/" + $0 } ?? (own == "/" ? "" : own))
            hierarchies.append(Hierarchy(controllers: controllers, parent: base + "/" + parentName))
        }
        let controllers = hierarchies.reduce(into: Set<String>()) { $0.formUnion($1.controllers) }
        guard controllers.contains("memory") || controllers.contains("pids") else { return nil }
        return CgroupV1Driver(hierarchies: hierarchies, runtime: runtime)
    }

    func create(name: String, limits: ResourceLimits) throws(SandboxError) -> any SandboxCgroup {
        let all = hierarchies.reduce(into: Set<String>()) { $0.formUnion($1.controllers) }
        for (needed, controller) in [
            (limits.memoryMax != nil || limits.memoryHigh != nil, "memory"), (limits.pidsMax != nil, "pids"),
            (limits.cpu != nil || limits.cpuWeight != nil, "cpu"),
        ] where needed && !all.contains(controller) {
            throw SandboxError(.host, "the \(controller) cgroup controller is not mounted (v1)")
        }
        let group = CgroupV1Group()
        do throws(SandboxError) {
            for hierarchy in hierarchies {
                let runtimeDirectory = hierarchy.parent + "/" + runtime
                for directory in [hierarchy.parent, runtimeDirectory] where mkdir(directory, 0o755) < 0 && errno != EEXIST {
                    throw SandboxError.system(.host, "creating cgroup \(directory)", errno: errno)
                }
                let path = runtimeDirectory + "/" + name
                guard mkdir(path, 0o755) == 0 else {
                    throw SandboxError.system(.host, "creating cgroup \(path)", errno: errno)
                }
                group.add(CgroupV1Group.Group(path: path, controllers: hierarchy.controllers))
                for (file, value) in Self.settings(limits, controllers: hierarchy.controllers, path: path) {
                    if let err = writeText(path + "/" + file, value) {
                        throw SandboxError.system(.host, "setting \(path)/\(file) to \(value)", errno: err)
                    }
                }
                let fd = open(path + "/cgroup.procs", O_WRONLY | O_CLOEXEC)
                guard fd >= 0 else { throw SandboxError.system(.host, "opening \(path)/cgroup.procs", errno: errno) }
                group.add(fd: fd)
                if hierarchy.controllers.contains("memory") { try group.watchOOM(path) }
            }
        } catch {
            group.destroy()
            throw error
        }
        return group
    }

    /// The files to write, in order, for the controllers of one hierarchy.
    static func settings(_ limits: ResourceLimits, controllers: Set<String>, path: String) -> [(String, String)] {
        var settings: [(String, String)] = []
        if controllers.contains("memory") {
            if let max = limits.memoryMax {
                settings.append(("memory.limit_in_bytes", "\(max.bytes)"))
                // Memory plus swap; the file exists only with swap accounting, and without
                // it swap is not limited on v1.
                if access(path + "/memory.memsw.limit_in_bytes", F_OK) == 0 {
                    let swap = limits.swapMax.map { max.bytes &+ $0.bytes } ?? UInt64(Int64.max)
                    settings.append(("memory.memsw.limit_in_bytes", swap >= UInt64(Int64.max) ? "-1" : "\(swap)"))
                }
            }
            // v1 has no memory.high; the soft limit is where reclaim starts under pressure.
            if let high = limits.memoryHigh { settings.append(("memory.soft_limit_in_bytes", "\(high.bytes)")) }
        }
        if controllers.contains("pids"), let pids = limits.pidsMax { settings.append(("pids.max", "\(pids)")) }
        if controllers.contains("cpu") {
            if let cores = limits.cpu {
                settings.append(("cpu.cfs_period_us", "100000"))
                settings.append(("cpu.cfs_quota_us", "\(max(1000, Int((cores * 100_000).rounded())))"))
            }
            if let weight = limits.cpuWeight { settings.append(("cpu.shares", "\(max(2, weight * 1024 / 100))")) }
        }
        return settings
    }

    func sweep() {
        for hierarchy in hierarchies {
            for runtimeDirectory in directoryEntries(hierarchy.parent) where Cgroups.runtimeIsGone(runtimeDirectory) {
                let path = hierarchy.parent + "/" + runtimeDirectory
                for sandbox in Cgroups.sandboxEntries(of: path) {
                    CgroupV1Group(groups: [.init(path: path + "/" + sandbox, controllers: hierarchy.controllers)]).destroy()
                }
                rmdir(path)
            }
        }
    }

    func removeRuntimeDirectory() {
        for hierarchy in hierarchies { rmdir(hierarchy.parent + "/" + runtime) }
    }
}

/// The groups of one sandbox on v1.
final class CgroupV1Group: SandboxCgroup {
    struct Group: Sendable {
        let path: String
        let controllers: Set<String>
    }

    private let state = Mutex<(groups: [Group], fds: [Int32])>(([], []))
    /// An eventfd the kernel signals at each OOM in the memory group (cgroup.event_control
    /// on memory.oom_control); -1 until watched.
    private let oomEvents = Mutex<Int32>(-1)

    /// Registers an eventfd for OOM notifications of the memory group at `path`.
    func watchOOM(_ path: String) throws(SandboxError) {
        let efd = hg_eventfd(1)
        guard efd >= 0 else { throw .system(.host, "eventfd for OOM notifications", errno: -efd) }
        let control = open(path + "/memory.oom_control", O_RDONLY | O_CLOEXEC)
        guard control >= 0 else {
            let err = errno
            close(efd)
            throw .system(.host, "opening \(path)/memory.oom_control", errno: err)
        }
        // The kernel keeps its own references to both files.
        defer { close(control) }
        if let err = writeText(path + "/cgroup.event_control", "\(efd) \(control)") {
            close(efd)
            throw .system(.host, "registering for OOM notifications in \(path)", errno: err)
        }
        oomEvents.withLock { $0 = efd }
    }

    /// OOM notifications so far (the eventfd's counter; reading resets it, so it is added up).
    private func oomNotifications() -> Int {
        oomEvents.withLock { efd in
            guard efd >= 0 else { return 0 }
            var count: UInt64 = 0
            return read(efd, &count, 8) == 8 ? Int(count) : 0
        }
    }
    private let notified = Mutex(0)

    init(groups: [Group] = []) { state.withLock { $0.groups = groups } }

    func add(_ group: Group) { state.withLock { $0.groups.append(group) } }
    func add(fd: Int32) { state.withLock { $0.fds.append(fd) } }

    var joinFDs: [Int32] { state.withLock { $0.fds } }
    var directoryFD: Int32? { nil }

    func statistics() -> CgroupStatistics {
        var statistics = CgroupStatistics()
        for group in state.withLock({ $0.groups }) {
            if group.controllers.contains("memory") {
                statistics.peakMemory = readText(group.path + "/memory.max_usage_in_bytes")
                    .flatMap { UInt64($0.trimmingNewline()) }.map { ByteSize(bytes: $0) }
                statistics.currentMemory = readText(group.path + "/memory.usage_in_bytes")
                    .flatMap { UInt64($0.trimmingNewline()) }.map { ByteSize(bytes: $0) }
                let killed = Int(keyedValue(readText(group.path + "/memory.oom_control"), "oom_kill") ?? 0)
                let notified = self.notified.withLock { total in
                    total += oomNotifications()
                    return total
                }
                statistics.oomKills = max(killed, notified)
            }
            if group.controllers.contains("cpuacct"),
                let ns = readText(group.path + "/cpuacct.usage").flatMap({ UInt64($0.trimmingNewline()) })
            {
                statistics.cpuTime = .nanoseconds(Int64(ns))
            }
        }
        return statistics
    }

    /// Freezes what is left (so nothing forks while it is being killed), kills it, thaws
    /// it, and removes every group.
    func destroy() {
        let (groups, fds) = state.withLock { state in
            defer { state = ([], []) }
            return state
        }
        fds.forEach { close($0) }
        oomEvents.withLock { efd in
            if efd >= 0 { close(efd) }
            efd = -1
        }
        let freezer = groups.first { $0.controllers.contains("freezer") }?.path
        if let probe = freezer ?? groups.first?.path, !(readText(probe + "/cgroup.procs") ?? "").isEmpty {
            if let freezer { freeze(freezer, "FROZEN") }
            for pid in (readText(probe + "/cgroup.procs") ?? "").split(separator: "\n").compactMap({ pid_t($0) }) {
                kill(pid, SIGKILL)
            }
            if let freezer { freeze(freezer, "THAWED") }
        }
        for group in groups.reversed() { Cgroups.remove(group.path) }
    }

    private func freeze(_ path: String, _ state: String) {
        _ = writeText(path + "/freezer.state", state)
        for _ in 0..<100 where readText(path + "/freezer.state")?.trimmingNewline() != state {
            usleep(1000)
        }
    }
}

extension String {
    func trimmingNewline() -> String {
        var s = Substring(self)
        while let c = s.last, c == "\n" || c == " " { s = s.dropLast() }
        return String(s)
    }
}
