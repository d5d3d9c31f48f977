import Glibc
import HangarCore
import HangarSandbox
import TOMLKit

/// Finds and reads policy files: `policies/NAME.toml` by image name (else
/// `policies/default.toml`), or a file given by path; follows `extends`.
public struct PolicyLoader: Sendable {
    /// The directory of named policies.
    public let directory: String
    private let cache = FileCache<Policy>()

    public init(directory: String) { self.directory = directory }

    /// The directory from `HANGAR_POLICIES`, else ./policies, else /etc/hangar/policies.
    public static func fromEnvironment() -> PolicyLoader {
        if let dir = getenv("HANGAR_POLICIES") { return PolicyLoader(directory: String(cString: dir)) }
        if access("policies", F_OK) == 0 { return PolicyLoader(directory: "policies") }
        return PolicyLoader(directory: "/etc/hangar/policies")
    }

    /// The policy an image runs with: its own file, else default.toml, else the built-in defaults.
    public func policy(forImage image: ImageName) throws(PolicyError) -> Policy {
        for name in [image.rawValue, "default"] {
            let path = "\(directory)/\(name).toml"
            if access(path, F_OK) == 0 { return try load(path: path) }
        }
        return Policy(name: "default")
    }

    /// The policy in the file at `path`, with what it extends.
    public func load(path: String) throws(PolicyError) -> Policy {
        // Parsed again only when one of its files changed.
        try cache.value(for: path) { () throws(PolicyError) -> (Policy, [String]) in
            let policy = try read(path: path)
            return (policy, policy.files + [policy.seccomp.base].filter { $0.hasPrefix("/") })
        }
    }

    private func read(path: String) throws(PolicyError) -> Policy {
        var policy = Policy(name: Self.stem(of: path))
        let origins = Origins()
        try apply(path: path, to: &policy, chain: [], origins: origins)
        try policy.validate(origins: origins, fallback: path)
        policy.sources = origins.files
        return policy
    }

    /// Applies the file at `path` (after its base) to `policy`.
    /// `chain`: the files that extend this one, outermost first, as (identity, path).
    private func apply(
        path: String, to policy: inout Policy, chain: [(identity: String, path: String)], origins: Origins
    ) throws(PolicyError) {
        let text = try Self.read(path)
        let table: TOMLTable
        do {
            table = try TOMLTable(string: text)
        } catch let error as TOMLParseError {
            throw PolicyError(
                file: path, line: error.source.begin.line,
                reason: "not valid TOML: \(error.description) (column \(error.source.begin.column))")
        } catch {
            throw PolicyError(file: path, reason: "not valid TOML: \(error)")
        }
        let lines = KeyLines(source: text)
        let document = PolicyDocument(file: path, lines: lines, origins: origins)
        // The TOML library reads strings as C strings: an escaped NUL would silently cut
        // a value short. No policy value may hold one.
        if let line = Self.lineWithEscapedNUL(text) {
            throw PolicyError(file: path, line: line, key: lines.key(at: line), reason: "contains a NUL byte")
        }
        let root = TableReader(table, path: "", document: document)
        if let base = try root.string("extends") {
            let basePath = try resolve(extends: base, from: path, root: root)
            let here = chain + [(Self.identity(of: path), path)]
            // Both errors belong to this file's `extends`, the one that closes the loop or
            // goes one file too deep.
            if here.contains(where: { $0.identity == Self.identity(of: basePath) }) {
                let loop = (here.map(\.path) + [basePath]).map { Self.stem(of: $0) }.joined(separator: " -> ")
                throw root.error("extends", "extends loop: \(loop)")
            }
            if here.count >= 8 { throw root.error("extends", "extends is nested deeper than 8 files") }
            try apply(path: basePath, to: &policy, chain: here, origins: origins)
        }
        policy.files.append(path)
        try PolicyReader(root: root, directory: Self.directory(of: path)).read(into: &policy)
    }

    /// `extends = "NAME"` is a named policy next to this one; a value with a '/' is a path
    /// relative to this file's directory.
    private func resolve(extends base: String, from path: String, root: TableReader) throws(PolicyError) -> String {
        let resolved: String
        if base.contains("/") {
            resolved = base.hasPrefix("/") ? base : Self.directory(of: path) + "/" + base
        } else {
            guard (try? ImageName(base)) != nil else {
                throw root.error("extends", "\"\(base)\" is neither a policy name nor a path")
            }
            resolved = Self.directory(of: path) + "/" + base + ".toml"
        }
        var st = stat()
        guard stat(resolved, &st) == 0, access(resolved, R_OK) == 0 else {
            throw root.error("extends", "cannot read \(resolved): \(String(cString: strerror(errno)))")
        }
        guard st.st_mode & S_IFMT == S_IFREG else {
            throw root.error("extends", "cannot read \(resolved): \(String(cString: strerror(EISDIR)))")
        }
        return resolved
    }

    /// The first line with a \u0000 or \U00000000 escape, if any.
    static func lineWithEscapedNUL(_ text: String) -> Int? {
        for (index, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            if line.contains("\\u0000") || line.contains("\\U00000000") { return index + 1 }
        }
        return nil
    }

    static func read(_ path: String) throws(PolicyError) -> String {
        let bytes: [UInt8]
        do {
            bytes = try readWholeFile(path, limit: 1 << 20)
        } catch {
            throw PolicyError(file: path, reason: error.description)
        }
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw PolicyError(file: path, reason: "not valid UTF-8")
        }
        return text
    }

    /// The file's device and inode, so that two spellings of one file are one in a loop check.
    static func identity(of path: String) -> String {
        var st = stat()
        return stat(path, &st) == 0 ? "\(st.st_dev):\(st.st_ino)" : path
    }

    static func stem(of path: String) -> String {
        let file = path.split(separator: "/").last.map(String.init) ?? path
        return file.hasSuffix(".toml") ? String(file.dropLast(5)) : file
    }

    static func directory(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return slash == path.startIndex ? "/" : String(path[..<slash])
    }
}
