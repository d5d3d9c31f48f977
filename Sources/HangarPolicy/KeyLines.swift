/// Where each key of a TOML document is written, by dotted path. The TOML parser reports
/// positions only for syntax errors; this reads the (already valid) text once more to tell
/// a policy error's line. It follows table headers (`[a.b]`, `[[a.b]]` with an index per
/// array element) and `key =` / `a.b =` assignments; keys inside inline tables and
/// multi-line arrays map to the line of the key that holds them.
struct KeyLines {
    private var lines: [String: Int] = [:]

    init(source: String) {
        var table: [String] = []
        var arrayCounts: [String: Int] = [:]
        var inMultiline: String? = nil  // the closing delimiter of a multi-line string
        var depth = 0  // open brackets/braces of a value spanning lines
        for (index, rawLine) in source.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let number = index + 1
            var line = Substring(rawLine)
            if let closing = inMultiline {
                guard let end = line.firstRange(of: closing) else { continue }
                inMultiline = nil
                line = line[end.upperBound...]
                continue
            }
            if depth > 0 {
                depth += Self.nesting(in: line)
                continue
            }
            let trimmed = line.drop(while: { $0 == " " || $0 == "\t" })
            if trimmed.hasPrefix("[[") {
                let name = Self.keyPath(trimmed.dropFirst(2).prefix(while: { $0 != "]" }))
                let joined = name.joined(separator: ".")
                let position = arrayCounts[joined, default: 0]
                arrayCounts[joined] = position + 1
                table = name
                table[table.count - 1] += "[\(position)]"
                lines[table.joined(separator: "."), default: number] = number
                lines[joined, default: number] = number
            } else if trimmed.hasPrefix("[") {
                table = Self.keyPath(trimmed.dropFirst().prefix(while: { $0 != "]" }))
                lines[table.joined(separator: "."), default: number] = number
            } else if let equals = Self.assignment(in: trimmed) {
                let key = Self.keyPath(trimmed[..<equals])
                let path = (table + key).joined(separator: ".")
                lines[path, default: number] = number
                let value = trimmed[trimmed.index(after: equals)...]
                // A multi-line string opened here and not closed on the same line.
                if let opening = ["\"\"\"", "'''"].first(where: { value.contains($0) }),
                    value.occurrences(of: opening) == 1
                {
                    inMultiline = opening
                }
                depth = max(0, Self.nesting(in: value))
            }
        }
    }

    /// The key assigned on `line` (the first one), if any.
    func key(at line: Int) -> String? {
        lines.filter { $0.value == line }.map(\.key).sorted { $0.count > $1.count }.first
    }

    /// The line of `path`, or of the nearest enclosing key or table that has one.
    func line(of path: String) -> Int? {
        var path = path
        while true {
            if let line = lines[path] { return line }
            if let bracket = path.lastIndex(of: "["), path.hasSuffix("]"), !path[bracket...].contains(".") {
                path = String(path[..<bracket])
                continue
            }
            guard let dot = path.lastIndex(of: ".") else { return nil }
            path = String(path[..<dot])
        }
    }

    /// The '=' of `key = value`, outside quotes; nil for a line that is not an assignment.
    private static func assignment(in line: Substring) -> Substring.Index? {
        guard let first = line.first, first != "#" else { return nil }
        var found: Substring.Index?
        forEachUnquoted(line) { index, c in
            if c == "=" { found = index }
            return found == nil
        }
        return found
    }

    /// Calls `body` with each character outside strings, in order, until it returns false.
    /// A backslash escapes the next character in a basic ("...") string only.
    private static func forEachUnquoted(_ text: Substring, _ body: (Substring.Index, Character) -> Bool) {
        var quote: Character? = nil
        var escaped = false
        for index in text.indices {
            let c = text[index]
            if let open = quote {
                if escaped {
                    escaped = false
                } else if c == "\\" && open == "\"" {
                    escaped = true
                } else if c == open {
                    quote = nil
                }
            } else if c == "\"" || c == "'" {
                quote = c
            } else if !body(index, c) {
                return
            }
        }
    }

    /// `a."b.c".d` → ["a", "b.c", "d"]
    private static func keyPath(_ text: Substring) -> [String] {
        var parts: [String] = []
        var current = ""
        var quote: Character? = nil
        for c in text {
            if let open = quote {
                if c == open { quote = nil } else { current.append(c) }
            } else if c == "\"" || c == "'" {
                quote = c
            } else if c == "." {
                parts.append(current.trimmingSpaces())
                current = ""
            } else {
                current.append(c)
            }
        }
        parts.append(current.trimmingSpaces())
        return parts
    }

    /// Opened minus closed brackets and braces outside strings and comments.
    private static func nesting(in text: Substring) -> Int {
        var level = 0
        forEachUnquoted(text) { _, c in
            if c == "[" || c == "{" { level += 1 }
            if c == "]" || c == "}" { level -= 1 }
            return c != "#"
        }
        return level
    }
}

extension Substring {
    func occurrences(of needle: String) -> Int {
        var count = 0
        var rest = self[...]
        while let found = rest.firstRange(of: needle) {
            count += 1
            rest = rest[found.upperBound...]
        }
        return count
    }
}

extension String {
    func trimmingSpaces() -> String {
        var s = Substring(self)
        while let c = s.first, c == " " || c == "\t" { s = s.dropFirst() }
        while let c = s.last, c == " " || c == "\t" || c == "\r" { s = s.dropLast() }
        return String(s)
    }
}
