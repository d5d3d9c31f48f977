import Glibc
import HangarCore
import HangarSandbox

/// The per-key data directories of a drone: ROOT/KEY for the default namespace and
/// ROOT/.namespaces/NAMESPACE/KEY for the others, made on first use and kept after the
/// backend ends (they are the key's state). A key names one directory entry, or nothing: a
/// key that could reach anything else is refused, and so is a key that starts with "."
/// (".namespaces" is not a key's).
struct DataDirectories: Sendable {
    /// The root, its symlinks resolved.
    let root: String
    /// Files a sandbox's uid k writes through an idmapped read-write bind are owned by
    /// `owner + k` on the host (SandboxRuntimeConfiguration.bindOwner).
    let owner: UInt32

    init(root: String, owner: UInt32) throws(DroneError) {
        do {
            try makeDirectories(root)
        } catch {
            throw DroneError("the data root \(root): \(error)")
        }
        guard let resolved = realpath(root, nil) else {
            throw DroneError("the data root \(root): \(String(cString: strerror(errno)))")
        }
        defer { free(resolved) }
        self.root = String(cString: resolved)
        self.owner = owner
    }

    /// Refuses a key that is not a single, plain directory name.
    func check(key: String, namespace: NamespaceName = .default) throws(DroneError) {
        let bytes = Array(key.utf8)
        let problem: String? =
            if bytes.isEmpty || bytes.count > 255 { "it must be 1...255 bytes" }
            else if key.hasPrefix(".") { "it starts with \".\"" }
            else if bytes.contains(UInt8(ascii: "/")) { "it contains \"/\"" }
            else if bytes.contains(where: { $0 < 0x20 || $0 == 0x7f }) { "it contains a control character" }
            else { nil }
        if let problem {
            throw DroneError(
                "key \(key.debugDescription.prefix(80)) cannot name a data directory below \(root): \(problem)")
        }
    }

    /// The key's directory, made (mode 0700, owned by the sandbox's `uid` and `gid` as
    /// mapped) when missing. A symlink or anything but a directory in its place is refused.
    func directory(forKey key: String, namespace: NamespaceName = .default, uid: UInt32, gid: UInt32) throws(DroneError)
        -> String
    {
        try check(key: key, namespace: namespace)
        var parent = root
        var rootFD = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard rootFD >= 0 else { throw DroneError("the data root \(root): \(String(cString: strerror(errno)))") }
        defer { close(rootFD) }
        if namespace != .default {
            // Root-owned levels: a namespace's keys live apart from every other namespace's.
            for level in [".namespaces", namespace.rawValue] {
                guard mkdirat(rootFD, level, 0o711) == 0 || errno == EEXIST else {
                    throw DroneError("the data directory \(parent)/\(level): \(String(cString: strerror(errno)))")
                }
                let next = openat(rootFD, level, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                guard next >= 0 else {
                    throw DroneError("the data directory \(parent)/\(level): \(String(cString: strerror(errno)))")
                }
                close(rootFD)
                rootFD = next
                parent += "/" + level
            }
        }
        let path = parent + "/" + key
        let made = mkdirat(rootFD, key, 0o700) == 0
        guard made || errno == EEXIST else {
            throw DroneError("the data directory \(path): \(String(cString: strerror(errno)))")
        }
        let fd = openat(rootFD, key, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else {
            let hint = errno == ELOOP || errno == ENOTDIR ? " (it is not a directory)" : ""
            throw DroneError("the data directory \(path)\(hint): \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        if made && fchown(fd, owner + uid, owner + gid) != 0 {
            throw DroneError("the data directory \(path): chown: \(String(cString: strerror(errno)))")
        }
        return path
    }
}
