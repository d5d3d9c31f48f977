/// A policy that cannot be used: which file, which line, which key, and why.
public struct PolicyError: Error, CustomStringConvertible, Sendable, Equatable {
    /// The policy file as it was named (a path, or "policies/NAME.toml").
    public var file: String
    /// The 1-based line, when the problem is at a place in the file.
    public var line: Int?
    /// The key's dotted path ("limits.memory_max", "filesystem.mounts[1].source"), if any.
    public var key: String?
    /// Why it was refused.
    public var reason: String

    public init(file: String, line: Int? = nil, key: String? = nil, reason: String) {
        self.file = file
        self.line = line
        self.key = key
        self.reason = reason
    }

    /// "policies/python.toml:12: limits.memory_max: …"
    public var description: String {
        var text = file
        if let line { text += ":\(line)" }
        text += ": "
        if let key { text += "\(key): " }
        return text + reason
    }
}
