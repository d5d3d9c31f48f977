import CShims
import Glibc
import HangarSandbox

/// An image of its own for the attack program: /attack, a setuid-root copy with a file
/// capability (/setuid-attack), and empty /tmp, /proc, /dev. Removed at the end.
struct AttackImage {
    let root: String
    let image: Image

    init(binary: String) throws {
        do {
            root = try makeTemporaryDirectory(prefix: "hangar-attack-image")
        } catch {
            throw SuiteError("\(error)")
        }
        chmod(root, 0o755)
        for directory in ["tmp", "proc", "dev"] { mkdir(root + "/" + directory, 0o755) }
        chmod(root + "/tmp", 0o1777)
        let bytes: [UInt8]
        do {
            bytes = try readWholeFile(binary, limit: 64 << 20)
        } catch {
            throw SuiteError("the attack program \(binary): \(error) (build it: swift build --product hangar-attack)")
        }
        try Self.store(bytes, at: root + "/attack", mode: 0o755)
        try Self.store(bytes, at: root + "/setuid-attack", mode: 0o755)
        chmod(root + "/setuid-attack", 0o4755)
        // security.capability v2: CAP_SYS_ADMIN permitted and effective.
        var capability: [UInt32] = [0x0200_0001, 1 << 21, 0, 0, 0]
        _ = hg_setxattr(root + "/setuid-attack", "security.capability", &capability, 20)
        image = try Image(root: root)
    }

    static func store(_ bytes: [UInt8], at path: String, mode: mode_t) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)
        guard fd >= 0 else { throw SuiteError("creating \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        guard bytes.withUnsafeBytes({ Glibc.write(fd, $0.baseAddress, $0.count) }) == bytes.count else {
            throw SuiteError("writing \(path)")
        }
    }

    /// Every entry with its mode, owner, size and (for files) an FNV-1a hash of its bytes.
    func fingerprint() -> [String] {
        directoryEntries(root).sorted().flatMap { name -> [String] in
            let path = root + "/" + name
            var st = stat()
            guard lstat(path, &st) == 0 else { return [name] }
            var hash: UInt64 = 0xcbf2_9ce4_8422_2325
            if st.st_mode & S_IFMT == S_IFREG, let bytes = try? readWholeFile(path, limit: 64 << 20) {
                for byte in bytes { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
            }
            let inside = st.st_mode & S_IFMT == S_IFDIR ? directoryEntries(path).sorted() : []
            return ["\(name) \(st.st_mode) \(st.st_uid) \(st.st_size) \(hash)"] + inside.map { "\(name)/\($0)" }
        }
    }

    func remove() {
        for name in ["attack", "setuid-attack"] { unlink(root + "/" + name) }
        for name in ["tmp", "proc", "dev"] { rmdir(root + "/" + name) }
        rmdir(root)
    }
}

/// A file on the host that no sandbox may reach.
struct HostCanary {
    let name: String
    let path: String
    let content: String

    init() throws {
        name = "hangar-canary-\(UInt32.random(in: 0...UInt32.max))"
        path = "/tmp/" + name
        content = "secret \(UInt64.random(in: 0...UInt64.max))\n"
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw SuiteError("creating the canary \(path)") }
        defer { close(fd) }
        _ = content.utf8CString.withUnsafeBufferPointer { write(fd, $0.baseAddress, $0.count - 1) }
    }

    func intact() -> Bool { readTextFile(path) == content }

    func remove() { unlink(path) }
}

/// A TCP service on the host's loopback and an abstract unix socket, both listening;
/// a sandbox must reach neither.
final class LoopbackListener: Sendable {
    let tcp: Int32
    let unix: Int32
    let port: UInt16
    let abstractName: String

    init() throws {
        let tcp = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(tcp, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard tcp >= 0, bound == 0, listen(tcp, 8) == 0 else { throw SuiteError("listening on 127.0.0.1") }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(tcp, $0, &length) }
        }
        let name = "hangar-attack-\(UInt32.random(in: 0...UInt32.max))"
        let unix = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var unixAddress = sockaddr_un()
        unixAddress.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(name.utf8)
        withUnsafeMutableBytes(of: &unixAddress.sun_path) { path in
            path[0] = 0
            for (i, byte) in bytes.enumerated() { path[i + 1] = byte }
        }
        let size = socklen_t(MemoryLayout<sa_family_t>.size + 1 + bytes.count)
        let unixBound = withUnsafePointer(to: &unixAddress) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(unix, $0, size) }
        }
        guard unix >= 0, unixBound == 0, listen(unix, 8) == 0 else { throw SuiteError("listening on @\(name)") }
        self.tcp = tcp
        self.unix = unix
        self.port = UInt16(bigEndian: address.sin_port)
        self.abstractName = name
    }

    func close() {
        Glibc.close(tcp)
        Glibc.close(unix)
    }
}

/// A pipe for the attack's output.
struct OutputPipe {
    let read: Int32
    let write: Int32

    init() throws {
        (read, write) = try makePipe()
    }

    func closeWrite() { close(write) }

    func closeBoth() {
        close(read)
        close(write)
    }

    /// Everything until EOF (the attack prints one line), then closes the read end.
    func readAll() -> String {
        defer { close(read) }
        return String(decoding: (try? readToEnd(read, limit: 1 << 20)) ?? [], as: UTF8.self)
    }
}

/// The suite could not set itself up.
public struct SuiteError: Error, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
}
