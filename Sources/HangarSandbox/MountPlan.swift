import CShims
import Glibc
import HangarCore

/// One step of building a sandbox's file tree inside its new root (see `struct hg_mount`).
struct MountStep: Sendable, Equatable {
    enum Kind: Int32 {
        case filesystem = 1, bind, rebind, symlink, host
    }

    struct Flags: OptionSet, Sendable {
        let rawValue: UInt32
        static let optional = Flags(rawValue: 1 << 0)
        static let makeDirectory = Flags(rawValue: 1 << 1)
        static let makeFile = Flags(rawValue: 1 << 2)
    }

    var kind: Kind
    var flags: Flags = []
    var attributes: UInt64 = 0
    /// The filesystem type, the host path to bind, or the symlink's text.
    var source: String
    /// The path inside the new root, without a leading '/'.
    var target: String
    /// Filesystem options as key/value pairs (nil value: a flag).
    var options: [(String, String?)] = []
    /// For `.host`: the index of the host bind (`struct hg_host_bind`).
    var tree: Int32 = -1

    static func == (a: MountStep, b: MountStep) -> Bool {
        a.kind == b.kind && a.flags.rawValue == b.flags.rawValue && a.attributes == b.attributes
            && a.source == b.source && a.target == b.target && a.tree == b.tree
            && a.options.map { "\($0.0)=\($0.1 ?? "")" } == b.options.map { "\($0.0)=\($0.1 ?? "")" }
    }
}

let mountNoSUID: UInt64 = 0x02  // MOUNT_ATTR_NOSUID
let mountNoDev: UInt64 = 0x04  // MOUNT_ATTR_NODEV
let mountNoExec: UInt64 = 0x08  // MOUNT_ATTR_NOEXEC
let mountReadOnly: UInt64 = 0x01  // MOUNT_ATTR_RDONLY

/// The file tree every sandbox gets on top of its image: a fresh /proc with the kernel's
/// sensitive files masked or read-only, and a minimal /dev.
enum MountPlan {
    /// /proc files that would reveal or change host state; replaced by /dev/null.
    static let procMaskedFiles = [
        "kcore", "keys", "key-users", "kmsg", "kallsyms", "kpagecount", "kpageflags", "kpagecgroup",
        "timer_list", "timer_stats", "sched_debug", "latency_stats", "vmallocinfo", "modules", "config.gz",
        "sysrq-trigger", "pagetypeinfo", "slabinfo",
    ]
    /// /proc directories about host hardware; replaced by an empty read-only tmpfs.
    static let procMaskedDirectories = ["acpi", "asound", "scsi", "driver", "fs/nfsd", "tty/driver"]
    /// /proc trees that stay readable but become read-only.
    static let procReadOnly = ["sys", "irq", "bus", "fs"]
    /// Device nodes bound from the host into the sandbox's /dev.
    static let devices = ["null", "zero", "full", "random", "urandom", "tty"]

    /// The standard tree, then the spec's own mounts (host binds as `.host` steps, in
    /// the order of `hostBinds(of:)`).
    static func steps(shmSize: UInt64, extra: [SandboxMount]) -> [MountStep] {
        var steps = steps(shmSize: shmSize)
        var tree: Int32 = 0
        for mount in extra {
            switch mount {
            case .bind(let source, let target, _):
                var st = stat()
                let isDirectory = stat(source, &st) != 0 || st.st_mode & S_IFMT == S_IFDIR
                steps.append(
                    MountStep(
                        kind: .host, flags: isDirectory ? .makeDirectory : .makeFile, source: source,
                        target: String(target.dropFirst()), tree: tree))
                tree += 1
            case .tmpfs(let target, let size):
                steps.append(
                    MountStep(
                        kind: .filesystem, flags: .makeDirectory, attributes: mountNoSUID | mountNoDev, source: "tmpfs",
                        target: String(target.dropFirst()), options: [("size", "\(size.bytes)"), ("mode", "1777")]))
            }
        }
        return steps
    }

    /// The host paths of `extra`'s binds, with their mount attributes; read-write binds are
    /// `owned` (what the sandbox writes there is owned on disk by the bind owner's uids).
    static func hostBinds(of extra: [SandboxMount]) -> [(source: String, attributes: UInt64, owned: Bool)] {
        extra.compactMap { mount in
            guard case .bind(let source, _, let readOnly) = mount else { return nil }
            return (source, mountNoSUID | mountNoDev | (readOnly ? mountReadOnly : 0), !readOnly)
        }
    }

    static func steps(shmSize: UInt64) -> [MountStep] {
        var steps: [MountStep] = [
            MountStep(
                kind: .filesystem, flags: .makeDirectory, attributes: mountNoSUID | mountNoDev | mountNoExec,
                source: "proc", target: "proc")
        ]
        for file in procMaskedFiles {
            // Mount attributes mean nothing on a device file: none are set (one syscall less).
            steps.append(MountStep(kind: .bind, flags: .optional, source: "/dev/null", target: "proc/" + file))
        }
        for directory in procMaskedDirectories {
            steps.append(
                MountStep(
                    kind: .filesystem, flags: .optional,
                    attributes: mountReadOnly | mountNoSUID | mountNoDev | mountNoExec, source: "tmpfs",
                    target: "proc/" + directory, options: [("size", "0"), ("mode", "0555")]))
        }
        for tree in procReadOnly {
            steps.append(
                MountStep(
                    kind: .rebind, flags: .optional, attributes: mountReadOnly | mountNoSUID | mountNoDev | mountNoExec,
                    source: "", target: "proc/" + tree))
        }
        steps.append(
            MountStep(
                kind: .filesystem, flags: .makeDirectory, attributes: mountNoSUID | mountNoExec, source: "tmpfs",
                target: "dev", options: [("size", "64k"), ("nr_inodes", "64"), ("mode", "0755")]))
        for device in devices {
            steps.append(MountStep(kind: .bind, flags: .makeFile, source: "/dev/" + device, target: "dev/" + device))
        }
        steps += [
            MountStep(
                kind: .filesystem, flags: .makeDirectory, attributes: mountNoSUID | mountNoExec, source: "devpts",
                target: "dev/pts",
                options: [("newinstance", nil), ("ptmxmode", "0666"), ("mode", "0620"), ("gid", "5")]),
            MountStep(kind: .symlink, source: "pts/ptmx", target: "dev/ptmx"),
            MountStep(kind: .symlink, source: "/proc/self/fd", target: "dev/fd"),
            MountStep(kind: .symlink, source: "/proc/self/fd/0", target: "dev/stdin"),
            MountStep(kind: .symlink, source: "/proc/self/fd/1", target: "dev/stdout"),
            MountStep(kind: .symlink, source: "/proc/self/fd/2", target: "dev/stderr"),
            MountStep(
                kind: .filesystem, flags: .makeDirectory, attributes: mountNoSUID | mountNoDev | mountNoExec,
                source: "tmpfs", target: "dev/shm", options: [("size", "\(shmSize)"), ("mode", "1777")]),
        ]
        return steps
    }
}
