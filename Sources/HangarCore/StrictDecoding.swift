/// Any JSON value: what a connect's `auth` carries through to the backend untouched.
public enum JSONValue: Codable, Sendable, Equatable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let value = try? container.decode(Bool.self) {
            self = .bool(value)
        } else if let value = try? container.decode(Double.self) {
            self = .number(value)
        } else if let value = try? container.decode(String.self) {
            self = .string(value)
        } else if let value = try? container.decode([JSONValue].self) {
            self = .array(value)
        } else {
            self = .object(try container.decode([String: JSONValue].self))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .null: try container.encodeNil()
        case .bool(let value): try container.encode(value)
        case .number(let value): try container.encode(value)
        case .string(let value): try container.encode(value)
        case .array(let value): try container.encode(value)
        case .object(let value): try container.encode(value)
        }
    }
}

/// A coding key for any field name (to list the fields a body really has).
struct AnyCodingKey: CodingKey {
    var stringValue: String
    var intValue: Int? { nil }
    init(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { nil }
}

/// The coding keys of a strictly decoded type: its fields, and `unknown` for any other
/// name. One container then both decodes the fields and sees a stray one, without a
/// second pass over the object.
public protocol StrictCodingKey: CodingKey, CaseIterable, Equatable, RawRepresentable<String> {
    static var unknown: Self { get }
}

extension StrictCodingKey {
    public init(stringValue: String) {
        self = Self(rawValue: stringValue) ?? .unknown
    }
}

extension Decoder {
    /// The fields of an object; a field the type does not know is an error that names it:
    /// a misspelt `max_idle_secs` is refused, never a silently ignored setting.
    public func strictContainer<Key: StrictCodingKey>(keyedBy: Key.Type) throws -> KeyedDecodingContainer<Key> {
        let fields = try container(keyedBy: Key.self)
        guard fields.allKeys.contains(.unknown) else { return fields }
        let known = Key.allCases.filter { $0 != .unknown }.map { $0.stringValue }
        let present = try container(keyedBy: AnyCodingKey.self).allKeys.map { $0.stringValue }
        let unknown = present.filter { !known.contains($0) }.sorted().first ?? ""
        // The field in the path (also at the top of the body), its reason without one.
        throw DecodingError.dataCorrupted(
            .init(
                codingPath: codingPath + [AnyCodingKey(stringValue: unknown)],
                debugDescription: "unknown field; the known ones are \(known.sorted().joined(separator: ", "))"))
    }
}

extension DecodingError {
    /// What was wrong and where, for a person: "spawn_config.max_idle_seconds: expected a
    /// number".
    public var explanation: String {
        func path(_ codingPath: [any CodingKey]) -> String {
            let text = codingPath.reduce(into: "") { text, key in
                if let index = key.intValue {
                    text += "[\(index)]"
                } else {
                    text += (text.isEmpty ? "" : ".") + key.stringValue
                }
            }
            return text.isEmpty ? "the body" : text
        }
        switch self {
        case .keyNotFound(let key, let context):
            return "\(path(context.codingPath + [key])): required"
        case .typeMismatch(let type, let context):
            return "\(path(context.codingPath)): expected \(Self.name(of: type))"
        case .valueNotFound(let type, let context):
            return "\(path(context.codingPath)): expected \(Self.name(of: type)), got null"
        case .dataCorrupted(let context):
            // Messages of our own checks carry their path already.
            if context.debugDescription.contains(":") && !context.codingPath.isEmpty
                || context.debugDescription.hasPrefix(path(context.codingPath))
            {
                return context.debugDescription
            }
            if context.codingPath.isEmpty { return "the body is not valid JSON" }
            return "\(path(context.codingPath)): \(context.debugDescription)"
        @unknown default:
            return "the body does not decode"
        }
    }

    static func name(of type: Any.Type) -> String {
        switch type {
        case is String.Type: "a string"
        case is Bool.Type: "true or false"
        case is Int.Type, is Int64.Type, is UInt64.Type, is Int32.Type, is Double.Type: "a number"
        default: String(describing: type).hasPrefix("Array") ? "a list" : "an object"
        }
    }
}
