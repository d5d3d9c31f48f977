import Glibc
import HangarCore

/// A built image: a directory tree that becomes a sandbox's read-only lower layer.
public struct Image: Sendable, Hashable {
    /// The image's name, or nil for an image given by path.
    public let name: ImageName?
    /// The absolute host path of the image's root directory.
    public let root: String

    /// The image at `root`; it must be an absolute path to a directory.
    public init(root: String, name: ImageName? = nil) throws(SandboxError) {
        guard root.hasPrefix("/"), !root.utf8.contains(0), !root.contains(",") , !root.contains(":") else {
            throw SandboxError(.image, "image path \"\(root)\" must be absolute and contain no ',', ':' or NUL")
        }
        var st = stat()
        guard stat(root, &st) == 0 else {
            let err = Glibc.errno
            throw SandboxError(.image, "image \(name.map { "\"\($0)\" " } ?? "")not found at \(root): \(errnoName(err))", errno: err)
        }
        guard st.st_mode & S_IFMT == S_IFDIR else {
            throw SandboxError(.image, "image root \(root) is not a directory")
        }
        self.name = name
        self.root = root
    }
}

extension Image {
    /// The image at `path`, relative to the current directory unless absolute (for
    /// paths typed by a user).
    public init(resolving path: String) throws(SandboxError) {
        try self.init(root: absolutePath(path))
    }
}

/// Where named images live: `<directory>/<name>/rootfs`.
public struct ImageStore: Sendable {
    /// The directory holding one folder per image.
    public let directory: String

    /// A store rooted at `directory`.
    public init(directory: String) { self.directory = directory }

    /// The store named by `HANGAR_IMAGES`, else `./images` when it exists, else /var/lib/hangar/images.
    public static func fromEnvironment() -> ImageStore {
        if let dir = getenv("HANGAR_IMAGES").map({ String(cString: $0) }), !dir.isEmpty {
            return ImageStore(directory: absolutePath(dir))
        }
        var st = stat()
        if stat("images", &st) == 0 && st.st_mode & S_IFMT == S_IFDIR {
            return ImageStore(directory: absolutePath("images"))
        }
        return ImageStore(directory: "/var/lib/hangar/images")
    }

    /// The image called `name`.
    public func image(_ name: ImageName) throws(SandboxError) -> Image {
        do {
            return try Image(root: "\(directory)/\(name.rawValue)/rootfs", name: name)
        } catch where error.errno == ENOENT {
            throw SandboxError(
                .image, "no image \"\(name)\" in \(directory) (build it with `make images`, or set HANGAR_IMAGES)",
                errno: ENOENT)
        }
    }
}

func absolutePath(_ path: String) -> String {
    if path.hasPrefix("/") { return path }
    var buffer = [CChar](repeating: 0, count: Int(PATH_MAX))
    guard getcwd(&buffer, buffer.count) != nil else { return path }
    let cwd = String(decoding: buffer.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    return cwd == "/" ? "/" + path : cwd + "/" + path
}
