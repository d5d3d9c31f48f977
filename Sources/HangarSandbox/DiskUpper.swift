import CShims
import Glibc
import HangarCore

/// An upper layer on disk instead of in memory: a sparse file of the upper size, formatted
/// ext4, attached to a loop device that detaches itself when the sandbox's mount of it is
/// gone (LO_FLAGS_AUTOCLEAR). The file is unlinked as soon as the device holds it, so
/// nothing is left on disk whatever happens to the supervisor. For workers whose scratch
/// data would not fit in memory.
struct DiskUpper: ~Copyable {
    /// The loop device, e.g. /dev/loop3.
    let device: String
    /// Held until the sandbox has mounted the device.
    private let deviceFD: Int32

    /// A fresh ext4 file system of `size` with `inodes` inodes, in `directory`.
    init(directory: String, name: String, size: ByteSize, inodes: UInt64) throws(SandboxError) {
        try makeDirectories(directory)
        let path = directory + "/" + name + ".img"
        let file = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard file >= 0 else { throw .system(.host, "creating the upper layer's file \(path)", errno: errno) }
        defer {
            unlink(path)
            close(file)
        }
        guard ftruncate(file, off_t(size.bytes)) == 0 else {
            throw .system(.host, "sizing \(path) to \(size)", errno: errno)
        }
        // No journal (the layer dies with the sandbox), no reserved blocks, lazy tables.
        try Self.run([
            "mkfs.ext4", "-q", "-F", "-O", "^has_journal", "-E", "nodiscard,lazy_itable_init=1", "-m", "0",
            "-N", "\(inodes)", path,
        ])
        var buffer = [CChar](repeating: 0, count: 64)
        let fd = hg_loop_attach(file, &buffer, buffer.count)
        guard fd >= 0 else {
            let hint = -fd == ENOENT ? " (is the loop module loaded?)" : ""
            throw .system(.host, "attaching \(path) to a loop device\(hint)", errno: -fd)
        }
        deviceFD = fd
        device = String(decoding: buffer.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Lets go of the device: from now on the sandbox's mount (if any) holds it.
    consuming func release() {
        close(deviceFD)
    }

    /// Runs a host tool to its end; a non-zero exit is an error.
    private static func run(_ arguments: [String]) throws(SandboxError) {
        var pid: pid_t = 0
        var argv = arguments.map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        let path = "/usr/sbin:/sbin:/usr/bin:/bin"
        let environment: [UnsafeMutablePointer<CChar>?] = [strdup("PATH=" + path), nil]
        defer { environment.forEach { free($0) } }
        let err = posix_spawnp(&pid, arguments[0], &actions, nil, &argv, environment)
        guard err == 0 else {
            throw .system(.host, "running \(arguments[0]) (install e2fsprogs for upper = \"disk\")", errno: err)
        }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        guard status == 0 else { throw SandboxError(.host, "\(arguments[0]) failed with status \(status)") }
    }
}
