import Glibc

/// Why a file could not be read, as text for a message.
struct FileReadError: Error, CustomStringConvertible {
    var description: String
}

/// The whole file at `path`, refused when larger than `limit` bytes.
func readWholeFile(_ path: String, limit: Int) throws(FileReadError) -> [UInt8] {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { throw FileReadError(description: "cannot open: \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    var bytes: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = read(fd, &buffer, buffer.count)
        if n < 0 && errno == EINTR { continue }
        if n < 0 { throw FileReadError(description: "cannot read: \(String(cString: strerror(errno)))") }
        if n == 0 { return bytes }
        bytes += buffer.prefix(n)
        if bytes.count > limit { throw FileReadError(description: "larger than \(limit >> 10) KiB") }
    }
}
