import CShims
import Glibc
import HangarCore
import HangarSandbox
import Synchronization

/// A backend's stdout and stderr: the last `capacity` bytes in memory, and everything in
/// a file that is rotated at `fileLimit` bytes (one older file, `.1`, is kept).
public final class LogBuffer: Sendable {
    private struct State {
        var bytes: [UInt8] = []
        /// Bytes written since the start, dropped ones included.
        var total = 0
        var file: Int32 = -1
        var fileSize = 0
        var closedStreams = 0
    }

    public let capacity: Int
    public let path: String?
    let fileLimit: Int
    private let state = Mutex(State())

    /// `directory` nil: memory only.
    public init(capacity: Int, directory: String?, name: String, fileLimit: Int = 16 << 20) {
        self.capacity = max(1024, capacity)
        self.fileLimit = fileLimit
        if let directory {
            try? makeDirectories(directory)
            let path = directory + "/" + name + ".log"
            self.path = path
            let fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o640)
            state.withLock { $0.file = fd }
            if fd < 0 { note("the log file \(path) could not be opened (\(String(cString: strerror(errno)))): memory only") }
        } else {
            path = nil
        }
    }

    deinit {
        state.withLock { if $0.file >= 0 { close($0.file) } }
    }

    /// A pipe whose write end becomes the backend's stdout or stderr; what it writes is
    /// kept here (read on a thread of its own until EOF). The caller closes the write end
    /// once the sandbox has it.
    public func pipe() throws(DroneError) -> Int32 {
        let (read, write): (Int32, Int32)
        do {
            (read, write) = try makePipe()
        } catch {
            throw DroneError("a log pipe: \(error)")
        }
        let started = startThread { [self] in
            var buffer = [UInt8](repeating: 0, count: 16384)
            while true {
                let n = Glibc.read(read, &buffer, buffer.count)
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { break }
                append(buffer.prefix(n))
            }
            close(read)
            streamEnded()
        }
        guard started == 0 else {
            close(read)
            close(write)
            throw DroneError("a log reader thread: \(String(cString: strerror(started)))")
        }
        return write
    }

    /// Both streams have ended: the file is closed (what is in memory stays).
    private func streamEnded() {
        state.withLock { state in
            state.closedStreams += 1
            if state.closedStreams == 2 && state.file >= 0 {
                close(state.file)
                state.file = -1
            }
        }
    }

    /// A line of the drone's own among the backend's output (why a spawn failed).
    func note(_ line: String) {
        append(ArraySlice(Array("hangar: \(line)\n".utf8)))
    }

    func append(_ chunk: ArraySlice<UInt8>) {
        state.withLock { state in
            state.bytes += chunk
            state.total += chunk.count
            if state.bytes.count > capacity { state.bytes.removeFirst(state.bytes.count - capacity) }
            guard state.file >= 0, let path else { return }
            _ = chunk.withUnsafeBytes { write(state.file, $0.baseAddress, $0.count) }
            state.fileSize += chunk.count
            if state.fileSize >= fileLimit {
                close(state.file)
                rename(path, path + ".1")
                state.file = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0o640)
                state.fileSize = 0
            }
        }
    }

    /// What is kept in memory, oldest first.
    public var text: String {
        state.withLock { String(decoding: $0.bytes, as: UTF8.self) }
    }

    /// The bytes written after the first `offset` (as many of them as are still kept), and
    /// the offset to ask from next time: for following a log.
    public func since(_ offset: Int) -> (bytes: [UInt8], next: Int) {
        state.withLock { state in
            let first = state.total - state.bytes.count
            let start = max(offset, first) - first
            return (start < state.bytes.count ? Array(state.bytes[start...]) : [], state.total)
        }
    }
}
