import Glibc
import Synchronization

/// Values read from files, kept while none of those files changes (same inode, size and
/// modification time): a drone reads a policy and its seccomp profile for every spawn,
/// and should parse them only when they change.
final class FileCache<Value: Sendable>: Sendable {
    private struct Entry: Sendable {
        let value: Value
        let stamps: [String: FileStamp]
    }

    private let entries = Mutex<[String: Entry]>([:])

    /// The value for `key` if every file it was read from is unchanged, else `load`'s
    /// (which returns the value and the files it read).
    func value<E: Error>(for key: String, load: () throws(E) -> (Value, [String])) throws(E) -> Value {
        if let entry = entries.withLock({ $0[key] }),
            entry.stamps.allSatisfy({ FileStamp(path: $0.key) == $0.value })
        {
            return entry.value
        }
        let (value, files) = try load()
        var stamps: [String: FileStamp] = [:]
        for file in files { stamps[file] = FileStamp(path: file) }
        entries.withLock { $0[key] = Entry(value: value, stamps: stamps) }
        return value
    }
}

/// What tells a changed file from an unchanged one.
struct FileStamp: Equatable, Sendable {
    let device: UInt64
    let inode: UInt64
    let size: Int64
    let seconds: Int
    let nanoseconds: Int

    /// nil when the file cannot be stat'ed (a cache entry with it is never reused).
    init?(path: String) {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        device = UInt64(st.st_dev)
        inode = UInt64(st.st_ino)
        size = Int64(st.st_size)
        seconds = st.st_mtim.tv_sec
        nanoseconds = st.st_mtim.tv_nsec
    }
}
