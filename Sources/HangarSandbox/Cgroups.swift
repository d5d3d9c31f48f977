import Glibc
import HangarCore

/// Which cgroup driver a runtime uses.
public enum CgroupDriverChoice: String, Sendable, CaseIterable {
    /// v2 where the memory controller is on the unified hierarchy, else v1, else none.
    case auto
    case v1
    case v2
    /// No cgroups: limits are refused, statistics are not kept.
    case none
}

/// Creates one cgroup (per controller, on v1) for each sandbox, with its limits.
///
/// Layout: `<base>/<parent>/rt-<pid>-<start>/<sandbox id>`, where `<base>` is this
/// process's own cgroup (or a configured directory) and `rt-…` belongs to one runtime
/// (its pid and start time). A runtime that was killed leaves its directory behind;
/// the next runtime to start removes directories whose process is gone (`sweep`).
protocol CgroupDriver: Sendable {
    var version: String { get }
    func create(name: String, limits: ResourceLimits) throws(SandboxError) -> any SandboxCgroup
    /// Removes what runtimes that are gone left behind, killing what is still inside.
    func sweep()
    /// Removes this runtime's own (empty) directory; called when the runtime is done.
    func removeRuntimeDirectory()
}

/// One sandbox's cgroup.
protocol SandboxCgroup: Sendable {
    /// Open cgroup.procs files: the child joins by writing "0" to each (v1).
    var joinFDs: [Int32] { get }
    /// The group's directory: the child is created in it with CLONE_INTO_CGROUP (v2).
    var directoryFD: Int32? { get }
    /// Peak memory, CPU time and OOM kills so far.
    func statistics() -> CgroupStatistics
    /// Kills everything still inside and removes the cgroup; safe to call twice.
    func destroy()
}

/// What the kernel counted for a sandbox's cgroup.
public struct CgroupStatistics: Sendable, Equatable {
    /// The most memory it used at once, when the kernel reports it.
    public var peakMemory: ByteSize?
    /// CPU time of all its processes, user and system.
    public var cpuTime: Duration?
    /// Processes the OOM killer ended in it.
    public var oomKills: Int = 0
    /// The memory it uses now.
    public var currentMemory: ByteSize?

    public init(peakMemory: ByteSize? = nil, cpuTime: Duration? = nil, oomKills: Int = 0, currentMemory: ByteSize? = nil) {
        self.peakMemory = peakMemory
        self.cpuTime = cpuTime
        self.oomKills = oomKills
        self.currentMemory = currentMemory
    }
}

enum Cgroups {
    /// The driver for `choice`, or nil for `.none` (or `.auto` on a host without usable cgroups).
    static func driver(
        _ choice: CgroupDriverChoice, parentName: String, root: String?
    ) throws(SandboxError) -> (any CgroupDriver)? {
        let runtime = runtimeDirectoryName()
        switch choice {
        case .none:
            return nil
        case .v1:
            guard let driver = CgroupV1Driver.discover(parentName: parentName, root: root, runtime: runtime) else {
                throw SandboxError(.host, "cgroup v1 was asked for, and no v1 memory or pids controller is mounted")
            }
            return driver
        case .v2:
            return try CgroupV2Driver.discover(parentName: parentName, root: root, runtime: runtime)
        case .auto:
            if CgroupV2Driver.unifiedHasMemory() {
                return try CgroupV2Driver.discover(parentName: parentName, root: root, runtime: runtime)
            }
            return CgroupV1Driver.discover(parentName: parentName, root: root, runtime: runtime)
        }
    }

    /// "rt-<pid>-<start time in clock ticks since boot>": unique while this process lives.
    static func runtimeDirectoryName(pid: pid_t = getpid()) -> String {
        "rt-\(pid)-\(startTime(of: pid) ?? 0)"
    }

    /// Field 22 of /proc/PID/stat.
    static func startTime(of pid: pid_t) -> UInt64? {
        guard let stat = readText("/proc/\(pid)/stat"), let close = stat.lastIndex(of: ")") else { return nil }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        // After the comm come field 3 (state) onwards: start time is field 22.
        return fields.count > 19 ? UInt64(fields[19]) : nil
    }

    /// Whether the runtime that named its directory `name` is gone.
    static func runtimeIsGone(_ name: String) -> Bool {
        let parts = name.split(separator: "-")
        guard parts.count == 3, parts[0] == "rt", let pid = pid_t(parts[1]), let start = UInt64(parts[2]) else {
            return false
        }
        return startTime(of: pid) != start
    }

    /// Removes `directory` once it is empty of processes (waits up to a second).
    static func remove(_ directory: String) {
        for _ in 0..<200 {
            if rmdir(directory) == 0 || errno == ENOENT { return }
            guard errno == EBUSY else { return }
            usleep(5000)
        }
    }

    /// The entries of `directory` that are sandbox cgroups.
    static func sandboxEntries(of directory: String) -> [String] {
        directoryEntries(directory).filter { $0.hasPrefix("sb-") }
    }
}

/// The first line starting with `key` in a "key value" file, its value as a number.
func keyedValue(_ text: String?, _ key: String) -> UInt64? {
    guard let text else { return nil }
    for line in text.split(separator: "\n") {
        let fields = line.split(separator: " ")
        if fields.count == 2, fields[0] == key { return UInt64(fields[1]) }
    }
    return nil
}

func readText(_ path: String) -> String? { readTextFile(path) }

/// Writes `text` to an existing file; returns the errno on failure.
func writeText(_ path: String, _ text: String) -> Int32? {
    let fd = open(path, O_WRONLY | O_CLOEXEC | O_TRUNC)
    guard fd >= 0 else { return errno }
    defer { close(fd) }
    let n = text.utf8CString.withUnsafeBufferPointer { write(fd, $0.baseAddress, $0.count - 1) }
    return n < 0 ? errno : nil
}

/// What cgroups this host offers a runtime (for `hangar doctor`).
public struct CgroupSupport: Sendable {
    /// "v2", "v1", or nil when neither has a memory or pids controller for this process.
    public let version: String?
    /// The controllers sandboxes could use.
    public let controllers: [String]

    /// Looks without changing anything.
    public static func probe() -> CgroupSupport {
        if CgroupV2Driver.unifiedHasMemory(), let (mount, own) = CgroupV2Driver.unified() {
            let available = words(readText(mount + (own == "/" ? "" : own) + "/cgroup.controllers"))
            return CgroupSupport(version: "v2", controllers: CgroupV2Driver.wanted.filter(available.contains))
        }
        if let v1 = CgroupV1Driver.discover(parentName: "hangar", root: nil, runtime: "probe") {
            return CgroupSupport(
                version: "v1", controllers: v1.hierarchies.reduce(into: Set<String>()) { $0.formUnion($1.controllers) }.sorted())
        }
        return CgroupSupport(version: nil, controllers: [])
    }
}
