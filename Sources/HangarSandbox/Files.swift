import CShims
import Glibc

/// Why a file could not be read, for a message ("cannot open: No such file or directory").
public struct FileReadError: Error, CustomStringConvertible, Sendable {
    public var errno: Int32
    public var description: String
}

/// The whole file at `path`, refused past `limit` bytes.
public func readWholeFile(_ path: String, limit: Int = 16 << 20) throws(FileReadError) -> [UInt8] {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { throw FileReadError(errno: errno, description: "cannot open: \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    return try readToEnd(fd, limit: limit)
}

/// Everything `fd` gives until EOF (a pipe's or a socket's other end closing), retrying
/// on EINTR; each chunk also goes to `each` as it arrives. Refused past `limit` bytes.
public func readToEnd(
    _ fd: Int32, limit: Int = .max, each: (ArraySlice<UInt8>) -> Void = { _ in }
) throws(FileReadError) -> [UInt8] {
    var bytes: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = read(fd, &buffer, buffer.count)
        if n < 0 && errno == EINTR { continue }
        if n < 0 { throw FileReadError(errno: errno, description: "cannot read: \(String(cString: strerror(errno)))") }
        if n == 0 { return bytes }
        bytes += buffer.prefix(n)
        each(buffer.prefix(n))
        if bytes.count > limit { throw FileReadError(errno: EFBIG, description: "larger than \(limit >> 10) KiB") }
    }
}

/// A pipe whose two ends are close-on-exec from the start.
public func makePipe() throws(SandboxError) -> (read: Int32, write: Int32) {
    var fds: [Int32] = [-1, -1]
    let piped = hg_pipe(&fds)
    guard piped == 0 else { throw .system(.host, "pipe", errno: -piped) }
    return (fds[0], fds[1])
}

/// A new directory only this process made ("/tmp/PREFIX-XXXXXX", mode 0700): nobody can
/// have planted links in it.
public func makeTemporaryDirectory(prefix: String) throws(SandboxError) -> String {
    var template = Array("/tmp/\(prefix)-XXXXXX".utf8CString)
    guard let made = mkdtemp(&template) else { throw .system(.host, "mkdtemp", errno: errno) }
    return String(cString: made)
}

/// A whole (small) file as text, or nil when it cannot be read.
public func readTextFile(_ path: String) -> String? {
    (try? readWholeFile(path)).map { String(decoding: $0, as: UTF8.self) }
}

/// The names in a directory, without . and .., sorted; empty when it cannot be read.
public func directoryEntries(_ path: String) -> [String] {
    guard let dir = opendir(path) else { return [] }
    defer { closedir(dir) }
    var names: [String] = []
    while let entry = readdir(dir) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
            String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
        }
        if name != "." && name != ".." { names.append(name) }
    }
    return names.sorted()
}

/// The path of `name` in the directory of the running executable (SwiftPM builds hangar,
/// hangar-init, hangar-attack and the test runner into one directory).
public func nextToExecutable(_ name: String) -> String {
    var buffer = [CChar](repeating: 0, count: Int(PATH_MAX))
    let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
    guard n > 0 else { return name }
    let exe = String(decoding: buffer.prefix(n).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    return parentDirectory(of: exe) + "/" + name
}
