import Glibc
import HangarCore

/// The cgroup v1 hierarchies this process can create sandbox groups in (memory, pids).
/// Each sandbox gets `<controller mount>/<own cgroup>/<parent>/<sandbox id>`: below the
/// process's own cgroup, so a drone inside a container or a systemd unit stays inside it.
struct CgroupV1Hierarchy: Sendable {
    /// Controller name -> absolute directory under which sandbox groups are created.
    let parents: [String: String]

    /// Finds the mounted v1 controllers and this process's place in each.
    static func discover(parentName: String) -> CgroupV1Hierarchy? {
        guard let mounts = readText("/proc/self/mounts"), let membership = readText("/proc/self/cgroup") else {
            return nil
        }
        var ownPaths: [String: String] = [:]
        for line in membership.split(separator: "\n") {
            let fields = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
            guard fields.count == 3 else { continue }
            for controller in fields[1].split(separator: ",") { ownPaths[String(controller)] = String(fields[2]) }
        }
        var parents: [String: String] = [:]
        for line in mounts.split(separator: "\n") {
            let fields = line.split(separator: " ")
            guard fields.count >= 4, fields[2] == "cgroup" else { continue }
            let options = fields[3].split(separator: ",").map(String.init)
            for controller in ["memory", "pids"] where options.contains(controller) {
                guard let own = ownPaths[controller] else { continue }
                let base = String(fields[1]) + (own == "/" ? "" : own)
                parents[controller] = base + "/" + parentName
            }
        }
        return parents.isEmpty ? nil : CgroupV1Hierarchy(parents: parents)
    }

    /// Creates the groups of one sandbox with its limits, and opens their cgroup.procs.
    func create(name: String, limits: ResourceLimits) throws(SandboxError) -> CgroupV1Group {
        var wanted: [String: [(String, String)]] = [:]
        if let memory = limits.memoryMax {
            wanted["memory", default: []].append(("memory.limit_in_bytes", "\(memory.bytes)"))
            // Without swap accounting this file is absent; the limit then covers RAM only.
            wanted["memory", default: []].append(("memory.memsw.limit_in_bytes?", "\(memory.bytes)"))
        }
        if let pids = limits.pidsMax { wanted["pids", default: []].append(("pids.max", "\(pids)")) }
        let group = CgroupV1Group()
        do {
            for (controller, settings) in wanted.sorted(by: { $0.key < $1.key }) {
                guard let parent = parents[controller] else {
                    throw SandboxError(.host, "the \(controller) cgroup controller is not mounted (v1)")
                }
                if mkdir(parent, 0o755) < 0 && errno != EEXIST {
                    throw SandboxError.system(.host, "creating cgroup \(parent)", errno: errno)
                }
                let path = parent + "/" + name
                guard mkdir(path, 0o755) == 0 else {
                    throw SandboxError.system(.host, "creating cgroup \(path)", errno: errno)
                }
                group.directories.append(path)
                for (file, value) in settings {
                    let optional = file.hasSuffix("?")
                    let file = optional ? String(file.dropLast()) : file
                    if let err = writeText(path + "/" + file, value), !(optional && err == ENOENT) {
                        throw SandboxError.system(.host, "setting \(path)/\(file) to \(value)", errno: err)
                    }
                }
                let fd = open(path + "/cgroup.procs", O_WRONLY | O_CLOEXEC)
                guard fd >= 0 else { throw SandboxError.system(.host, "opening \(path)/cgroup.procs", errno: errno) }
                group.procsFDs.append(fd)
            }
        } catch let error as SandboxError {
            group.destroy()
            throw error
        } catch {
            group.destroy()
            throw SandboxError(.host, "creating cgroups: \(error)")
        }
        return group
    }
}

/// The cgroups of one sandbox.
final class CgroupV1Group: @unchecked Sendable {
    fileprivate(set) var directories: [String] = []
    fileprivate(set) var procsFDs: [Int32] = []

    /// Closes the files and removes the groups. The sandbox's processes are gone by
    /// now: its init has been reaped, and the pid namespace dies with it.
    func destroy() {
        procsFDs.forEach { close($0) }
        procsFDs = []
        for directory in directories.reversed() {
            var tries = 0
            while rmdir(directory) < 0 && errno == EBUSY && tries < 200 {
                tries += 1
                usleep(5000)
            }
        }
        directories = []
    }
}

func readText(_ path: String) -> String? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var bytes: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 16384)
    while true {
        let n = read(fd, &buffer, buffer.count)
        if n < 0 && errno == EINTR { continue }
        if n <= 0 { break }
        bytes += buffer.prefix(n)
    }
    return String(decoding: bytes, as: UTF8.self)
}

/// Writes `text` to an existing file; returns the errno on failure.
func writeText(_ path: String, _ text: String) -> Int32? {
    let fd = open(path, O_WRONLY | O_CLOEXEC | O_TRUNC)
    guard fd >= 0 else { return errno }
    defer { close(fd) }
    let n = text.utf8CString.withUnsafeBufferPointer { write(fd, $0.baseAddress, $0.count - 1) }
    return n < 0 ? errno : nil
}
