import Glibc
import HangarSandbox
import Testing

/// What a sandbox may leave on the host: mounts, cgroups, entries in the spawning
/// thread's root mount point, processes with sandbox uids, network namespaces held by
/// this process. Taken before and after a test; the two must be equal.
public struct HostState: Equatable, CustomStringConvertible, Sendable {
    public var mounts: [String]
    public var cgroups: [String]
    public var spawnRoot: [String]
    public var sandboxProcesses: [String]
    /// Network namespaces this process holds open besides the shared runtime's prepared
    /// ones: a sandbox's that was not released.
    public var networkNamespaces: Int

    /// The state now. `/run/hangar` and the cgroup parent "hangar" are the runtime defaults.
    public static func capture() -> HostState {
        HostState(
            mounts: mountPoints(), cgroups: sandboxCgroups(), spawnRoot: entries(of: "/run/hangar/spawn-root"),
            sandboxProcesses: processesWithSandboxUIDs(),
            networkNamespaces: openNetworkNamespaces() - TestSandbox.runtime.preparedNetworkNamespaceCount)
    }

    /// Distinct network namespaces among this process's open fds, but its own (which
    /// threads that visit sandboxes' namespaces keep open to come back to).
    static func openNetworkNamespaces() -> Int {
        func link(_ path: String) -> String {
            var buffer = [CChar](repeating: 0, count: 64)
            let n = readlink(path, &buffer, buffer.count - 1)
            return n > 0 ? String(decoding: buffer.prefix(n).map { UInt8(bitPattern: $0) }, as: UTF8.self) : ""
        }
        let own = link("/proc/self/ns/net")
        var seen = Set<String>()
        for fd in entries(of: "/proc/self/fd") {
            let target = link("/proc/self/fd/" + fd)
            if target.hasPrefix("net:[") && target != own { seen.insert(target) }
        }
        return seen.count
    }

    /// Waits up to five seconds for the state to settle back to `expected` (the kernel
    /// frees namespaces asynchronously, and an orphaned init is reaped by the host's
    /// PID 1 in its own time), then returns what it is.
    public static func settled(to expected: HostState) async -> HostState {
        var now = capture()
        for _ in 0..<250 where now != expected {
            try? await Task.sleep(for: .milliseconds(20))
            now = capture()
        }
        return now
    }

    public var description: String {
        "mounts: \(mounts.count), cgroups: \(cgroups), spawn root: \(spawnRoot), sandbox processes: \(sandboxProcesses), "
            + "network namespaces held: \(networkNamespaces)"
    }

    static func mountPoints() -> [String] {
        let text = readFile("/proc/self/mountinfo") ?? ""
        return text.split(separator: "\n").map { line in
            let fields = line.split(separator: " ")
            return fields.count > 4 ? String(fields[4]) : String(line)
        }.sorted()
    }

    /// The directory `name` below this process's cgroup in each v1 controller's hierarchy
    /// (the runtime parent a test's sandboxes, or drones, use), with the controller.
    static func cgroupParents(named name: String) -> [(controller: String, path: String)] {
        let membership = readFile("/proc/self/cgroup") ?? ""
        return membership.split(separator: "\n").compactMap { line in
            let fields = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
            guard fields.count == 3, !fields[1].isEmpty, !fields[1].hasPrefix("name=") else { return nil }
            let controller = fields[1].split(separator: ",").first.map(String.init) ?? ""
            let own = fields[2] == "/" ? "" : String(fields[2])
            return (controller, "/sys/fs/cgroup/\(controller)\(own)/\(name)")
        }
    }

    /// The sandbox cgroups below the runtime parent `parent` of this process's cgroups.
    public static func sandboxCgroups(parent name: String = "hangar") -> [String] {
        var found: [String] = []
        for (controller, parent) in cgroupParents(named: name) {
            // hangar/rt-<pid>-<start>/sb-<id>: one directory per runtime.
            for runtime in entries(of: parent) where runtime.hasPrefix("rt-") {
                found += entries(of: parent + "/" + runtime).filter { $0.hasPrefix("sb-") }.map {
                    "\(controller)/\(runtime)/\($0)"
                }
            }
        }
        return found.sorted()
    }

    /// Removes the (empty) runtime parent `name` of this process's cgroups and its runtime
    /// directories, as a test's drones left them (a drone killed with SIGKILL leaves its
    /// runtime directory). Only names a test chose.
    public static func removeCgroupParent(_ name: String) {
        for (_, parent) in cgroupParents(named: name) {
            for runtime in entries(of: parent) where runtime.hasPrefix("rt-") { rmdir(parent + "/" + runtime) }
            rmdir(parent)
        }
    }

    /// The v1 cgroup directory of a sandbox in one controller's hierarchy, if it exists.
    public static func cgroupDirectory(controller: String, sandbox id: String) -> String? {
        let membership = readFile("/proc/self/cgroup") ?? ""
        for line in membership.split(separator: "\n") {
            let fields = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
            guard fields.count == 3, fields[1].split(separator: ",").contains(Substring(controller)) else { continue }
            let own = fields[2] == "/" ? "" : String(fields[2])
            let parent = "/sys/fs/cgroup/\(controller)\(own)/hangar"
            for runtime in entries(of: parent) where entries(of: parent + "/" + runtime).contains(id) {
                return parent + "/" + runtime + "/" + id
            }
        }
        return nil
    }

    /// Processes whose real uid is in the sandbox range [2^30, 2^32).
    public static func processesWithSandboxUIDs() -> [String] {
        entries(of: "/proc").compactMap { pid -> String? in
            guard Int(pid) != nil, let status = readFile("/proc/\(pid)/status") else { return nil }
            guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix("Uid:") }),
                let uid = line.split(whereSeparator: { $0 == "\t" || $0 == " " }).dropFirst().first.flatMap({
                    UInt64($0)
                })
            else { return nil }
            return uid >= 1 << 30 && uid < 0xffff_ffff ? "\(pid) uid \(uid)" : nil
        }.sorted()
    }
}

/// Directory entries, without . and ..; empty when it does not exist.
public func entries(of path: String) -> [String] { directoryEntries(path) }

/// A whole file as text, or nil.
public func readFile(_ path: String) -> String? { readTextFile(path) }

/// A directory below /tmp for one test; `remove()` deletes it and everything in it.
public struct TemporaryDirectory: Sendable {
    public let path: String

    public init(_ prefix: String = "hangar-test") throws {
        var template = Array("/tmp/\(prefix)-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw TestFailure("mkdtemp: errno \(errno)") }
        path = String(cString: made)
    }

    public func remove() { removeTree(path) }
}

/// Deletes `path` and, for a directory, everything below it (symlinks are not followed).
public func removeTree(_ path: String) {
    var status = stat()
    guard lstat(path, &status) == 0 else { return }
    if status.st_mode & S_IFMT == S_IFDIR {
        for entry in directoryEntries(path) { removeTree(path + "/" + entry) }
        rmdir(path)
    } else {
        unlink(path)
    }
}

/// Expects the host to come back to `before` (see `HostState.settled`): nothing a test's
/// sandboxes made is left.
public func expectHostRestored(
    _ before: HostState, _ comment: Comment = "the test left something on the host",
    sourceLocation: SourceLocation = #_sourceLocation
) async {
    let after = await HostState.settled(to: before)
    #expect(after == before, comment, sourceLocation: sourceLocation)
}
