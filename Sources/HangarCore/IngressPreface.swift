import CShims
import Glibc

/// The first line of a connection to a drone's ingress port: which backend, when, and an
/// HMAC-SHA256 of both under the secret the drone and its proxies share. The drone answers
/// with one line once the backend is ready and connected (it holds the connection until
/// then, within a bound), or with why not; then the connection carries the backend's bytes.
///
///     proxy:  HANGAR-INGRESS 1 <backend id> <unix seconds> <hex hmac of "1 <backend id> <unix seconds>">\n
///     drone:  HANGAR-INGRESS OK\n      or      HANGAR-INGRESS NO <reason>\n  (and closes)
///
/// A connection whose preface is malformed, stale or wrongly signed gets no answer.
public enum IngressPreface {
    /// The drone's answer when the backend is connected.
    public static let accepted = "HANGAR-INGRESS OK\n"

    /// The drone's answer when it will not carry the connection.
    public static func refused(_ refusal: IngressRefusal) -> String {
        "HANGAR-INGRESS NO \(refusal.code)\n"
    }

    /// The drone's answer line (without its LF) read back: nil for OK, else the refusal;
    /// a line that is neither is malformed.
    public static func answer(_ line: some Collection<UInt8>) -> IngressRefusal?? {
        let text = String(decoding: line, as: UTF8.self)
        if text == "HANGAR-INGRESS OK" { return .some(nil) }
        guard text.hasPrefix("HANGAR-INGRESS NO ") else { return nil }
        let code = text.dropFirst("HANGAR-INGRESS NO ".count)
        return .some(IngressRefusal.allCases.first { $0.code == code } ?? .unreachable)
    }

    /// How far the preface's time may be from the drone's clock.
    public static let window: Int = 60

    /// The preface for `backend`, signed now.
    public static func make(backend: BackendID, secret: [UInt8], now: Int = Int(time(nil))) -> String {
        "HANGAR-INGRESS 1 \(backend) \(now) \(hex(mac(backend: backend.rawValue, time: now, secret: secret)))\n"
    }

    static func mac(backend: String, time: Int, secret: [UInt8]) -> [UInt8] {
        let message = Array("1 \(backend) \(time)".utf8)
        var out = [UInt8](repeating: 0, count: 32)
        _ = hg_hmac_sha256(secret, secret.count, message, message.count, &out)
        return out
    }

    static func hex(_ bytes: [UInt8]) -> String {
        bytes.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
    }

    /// The backend id of a valid preface, or why it is refused.
    public static func verify(_ line: String, secret: [UInt8], now: Int = Int(time(nil))) -> Result<BackendID, IngressRefusal> {
        let fields = line.split(separator: " ", omittingEmptySubsequences: false)
        guard fields.count == 5, fields[0] == "HANGAR-INGRESS", fields[1] == "1" else {
            return .failure(.malformed)
        }
        // At most 12 plain digits: no sign, and no overflow in the window's arithmetic.
        guard (1...12).contains(fields[3].utf8.count), fields[3].utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }),
            let stamp = Int(fields[3]), let id = try? BackendID(String(fields[2]))
        else { return .failure(.malformed) }
        guard abs(now - stamp) <= window else { return .failure(.expired) }
        let expected = Array(hex(mac(backend: String(fields[2]), time: stamp, secret: secret)).utf8)
        let given = Array(fields[4].utf8)
        guard constantTimeEqual(given, expected) else {
            return .failure(.badSignature)
        }
        return .success(id)
    }
}

/// Why an ingress connection was refused.
public enum IngressRefusal: String, Error, Sendable, CaseIterable {
    case malformed = "malformed preface"
    case expired = "preface outside the time window"
    case badSignature = "wrong signature"
    case unknownBackend = "no such backend"
    case notReady = "backend not ready in time"
    case ended = "backend ended"
    case unreachable = "backend refused the connection"

    /// Its word in a refusal line.
    public var code: String {
        switch self {
        case .malformed: "malformed"
        case .expired: "expired"
        case .badSignature: "bad-signature"
        case .unknownBackend: "unknown-backend"
        case .notReady: "not-ready"
        case .ended: "ended"
        case .unreachable: "unreachable"
        }
    }
}

