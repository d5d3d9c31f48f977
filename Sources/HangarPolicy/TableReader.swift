import HangarCore
import TOMLKit

/// One policy file's text and where its keys are, for errors.
struct PolicyDocument {
    let file: String
    let lines: KeyLines
    let origins: Origins

    func error(_ key: String?, _ reason: String) -> PolicyError {
        PolicyError(file: file, line: key.flatMap { lines.line(of: $0) }, key: key, reason: reason)
    }
}

/// Which file (and line) last set each key, across the files of one policy, in order:
/// errors about the combination (memory_high above memory_max) point at the key set last.
final class Origins {
    struct Place {
        let file: String
        let line: Int?
        let order: Int
    }

    private var places: [String: Place] = [:]

    func record(_ key: String, in document: PolicyDocument) {
        places[key] = Place(file: document.file, line: document.lines.line(of: key), order: places.count)
    }

    func place(of key: String) -> Place? { places[key] }

    /// Key → the file that set it last.
    var files: [String: String] { places.mapValues(\.file) }
}

/// Reads one table of a policy file, key by key, with the type and range each key needs,
/// and refuses every key it was not asked for (`finish`).
final class TableReader {
    let table: TOMLTable
    /// The table's dotted path in the document ("" for the top level).
    let path: String
    let document: PolicyDocument
    private var read: Set<String> = []

    init(_ table: TOMLTable, path: String, document: PolicyDocument) {
        self.table = table
        self.path = path
        self.document = document
    }

    func keyPath(_ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

    func error(_ key: String?, _ reason: String) -> PolicyError {
        document.error(key.map(keyPath), reason)
    }

    /// Whether the key is there; it counts as read (a known key).
    func contains(_ key: String) -> Bool {
        read.insert(key)
        return table.contains(key: key)
    }

    private func value(_ key: String) -> TOMLValue? {
        read.insert(key)
        guard let value = table[key]?.tomlValue else { return nil }
        document.origins.record(keyPath(key), in: document)
        return value
    }

    private func typed<T>(_ key: String, _ expected: String, _ get: (TOMLValue) -> T?) throws(PolicyError) -> T? {
        guard let value = value(key) else { return nil }
        guard let typed = get(value) else { throw error(key, "expected \(expected), got \(describe(value))") }
        return typed
    }

    func string(_ key: String) throws(PolicyError) -> String? {
        try typed(key, "a string") { $0.string }
    }

    func bool(_ key: String) throws(PolicyError) -> Bool? {
        try typed(key, "true or false") { $0.type == .bool ? $0.bool : nil }
    }

    func integer(_ key: String, in range: ClosedRange<Int>) throws(PolicyError) -> Int? {
        guard let n = try typed(key, "an integer", { $0.type == .int ? $0.int : nil }) else { return nil }
        guard range.contains(n) else { throw error(key, "must be \(range.lowerBound)...\(range.upperBound), got \(n)") }
        return n
    }

    /// A number, integer or not, in `range`.
    func number(_ key: String, in range: ClosedRange<Double>) throws(PolicyError) -> Double? {
        let n = try typed(key, "a number") { value -> Double? in
            switch value.type {
            case .int: value.int.map(Double.init)
            case .double: value.double
            default: nil
            }
        }
        guard let n else { return nil }
        guard n.isFinite, range.contains(n) else {
            throw error(key, "must be between \(range.lowerBound) and \(range.upperBound), got \(n)")
        }
        return n
    }

    /// A size: a string with a unit ("512m", "2g") or an integer number of bytes.
    func size(_ key: String, in range: ClosedRange<UInt64>) throws(PolicyError) -> ByteSize? {
        guard let value = value(key) else { return nil }
        let size: ByteSize
        switch value.type {
        case .int where (value.int ?? -1) >= 0:
            size = ByteSize(bytes: UInt64(value.int!))
        case .string:
            do {
                size = try ByteSize(parsing: value.string!)
            } catch {
                throw self.error(key, error.reason + " (got \"\(value.string!)\")")
            }
        default:
            throw error(key, "expected a size such as \"512m\" or a number of bytes, got \(describe(value))")
        }
        guard range.contains(size.bytes) else {
            throw error(
                key, "must be \(ByteSize(bytes: range.lowerBound))...\(ByteSize(bytes: range.upperBound)), got \(size)")
        }
        return size
    }

    /// A duration: "30s", "5m", "2h", "1h30m", or an integer number of seconds.
    func duration(_ key: String, in range: ClosedRange<Int>) throws(PolicyError) -> Int? {
        guard let value = value(key) else { return nil }
        let seconds: Int
        switch value.type {
        case .int:
            seconds = value.int!
        case .string:
            guard let parsed = parseDuration(value.string!) else {
                throw error(key, "expected a duration such as \"30s\", \"5m\" or \"1h30m\", got \"\(value.string!)\"")
            }
            seconds = parsed
        default:
            throw error(key, "expected a duration such as \"30s\" or a number of seconds, got \(describe(value))")
        }
        guard range.contains(seconds) else {
            throw error(key, "must be \(range.lowerBound)...\(range.upperBound) seconds, got \(seconds)")
        }
        return seconds
    }

    func strings(_ key: String) throws(PolicyError) -> [String]? {
        guard let value = value(key) else { return nil }
        guard let array = value.array else { throw error(key, "expected an array of strings, got \(describe(value))") }
        var strings: [String] = []
        for (index, element) in array.enumerated() {
            guard let string = element.tomlValue.string else {
                throw error("\(key)[\(index)]", "expected a string, got \(describe(element.tomlValue))")
            }
            strings.append(string)
        }
        return strings
    }

    /// An array of values of any type, checked by the caller.
    func values(_ key: String) throws(PolicyError) -> [TOMLValue]? {
        guard let value = value(key) else { return nil }
        guard let array = value.array else { throw error(key, "expected an array, got \(describe(value))") }
        return array.map { $0.tomlValue }
    }

    /// A table of string values (e.g. env), sorted by key.
    func stringTable(_ key: String) throws(PolicyError) -> [(String, String)]? {
        guard let value = value(key) else { return nil }
        guard let table = value.table else { throw error(key, "expected a table of strings, got \(describe(value))") }
        var pairs: [(String, String)] = []
        for name in table.keys.sorted() {
            guard let string = table[name]?.tomlValue.string else {
                throw error("\(key).\(name)", "expected a string, got \(describe(table[name]!.tomlValue))")
            }
            pairs.append((name, string))
        }
        return pairs
    }

    func table(_ key: String) throws(PolicyError) -> TableReader? {
        guard let value = value(key) else { return nil }
        guard let table = value.table else { throw error(key, "expected a table, got \(describe(value))") }
        return TableReader(table, path: keyPath(key), document: document)
    }

    /// An array of tables (`[[key]]`).
    func tables(_ key: String) throws(PolicyError) -> [TableReader]? {
        guard let value = value(key) else { return nil }
        guard let array = value.array else { throw error(key, "expected an array of tables, got \(describe(value))") }
        var readers: [TableReader] = []
        for (index, element) in array.enumerated() {
            guard let table = element.tomlValue.table else {
                throw error("\(key)[\(index)]", "expected a table, got \(describe(element.tomlValue))")
            }
            readers.append(TableReader(table, path: keyPath("\(key)[\(index)]"), document: document))
        }
        return readers
    }

    /// Refuses keys nobody asked for.
    func finish() throws(PolicyError) {
        for key in table.keys.sorted() where !read.contains(key) {
            let known = read.sorted().joined(separator: ", ")
            throw error(key, "unknown key" + (known.isEmpty ? "" : "; known here: \(known)"))
        }
    }
}

/// "1h30m" → 5400; nil when it is not a duration.
func parseDuration(_ text: String) -> Int? {
    var total = 0
    var number = ""
    var sawUnit = false
    for c in text {
        if c.isASCII && c.isNumber {
            number.append(c)
            continue
        }
        let unit: Int
        switch c {
        case "s": unit = 1
        case "m": unit = 60
        case "h": unit = 3600
        case "d": unit = 86400
        default: return nil
        }
        guard let n = Int(number) else { return nil }
        let (product, overflow) = n.multipliedReportingOverflow(by: unit)
        let (sum, carry) = total.addingReportingOverflow(product)
        guard !overflow, !carry else { return nil }
        total = sum
        number = ""
        sawUnit = true
    }
    return number.isEmpty && sawUnit ? total : nil
}

/// "a string", "an integer (12)", … for messages.
func describe(_ value: TOMLValue) -> String {
    switch value.type {
    case .string: "a string (\"\(value.string!.prefix(40))\")"
    case .int: "an integer (\(value.int!))"
    case .double: "a number (\(value.double!))"
    case .bool: "\(value.bool!)"
    case .array: "an array"
    case .table: "a table"
    default: "a \(value.type)"
    }
}
