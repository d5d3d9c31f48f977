import Glibc

/// A digest of a directory tree: every entry's path, type, mode, owner, size, link
/// target and content (FNV-1a, 64 bits). Equal digests mean an unchanged tree.
public struct TreeDigest: Equatable, Sendable {
    public private(set) var value: UInt64 = 0xcbf2_9ce4_8422_2325
    public private(set) var entries = 0

    public init(root: String) throws {
        try walk(root, relative: "")
    }

    private mutating func mix<S: Sequence<UInt8>>(_ bytes: S) {
        for byte in bytes {
            value ^= UInt64(byte)
            value = value &* 0x100_0000_01b3
        }
    }

    private mutating func walk(_ path: String, relative: String) throws {
        var st = stat()
        guard lstat(path, &st) == 0 else { throw TestFailure("lstat \(path): errno \(errno)") }
        entries += 1
        mix(Array("\(relative)|\(st.st_mode)|\(st.st_uid)|\(st.st_gid)|\(st.st_size)|".utf8))
        switch st.st_mode & S_IFMT {
        case S_IFDIR:
            for name in HangarTestSupport.entries(of: path) { try walk(path + "/" + name, relative: relative + "/" + name) }
        case S_IFLNK:
            var buffer = [UInt8](repeating: 0, count: 4096)
            let n = buffer.withUnsafeMutableBytes { readlink(path, $0.baseAddress!.assumingMemoryBound(to: CChar.self), 4096) }
            mix(buffer.prefix(max(n, 0)))
        case S_IFREG:
            let fd = open(path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { throw TestFailure("open \(path): errno \(errno)") }
            defer { close(fd) }
            var buffer = [UInt8](repeating: 0, count: 65536)
            while true {
                let n = read(fd, &buffer, buffer.count)
                if n <= 0 { break }
                mix(buffer.prefix(n))
            }
        default:
            break
        }
    }
}
