import CShims
import Glibc
import Synchronization

/// The first line of a connection to a drone's ingress port: which backend, when, a nonce,
/// and an HMAC-SHA256 of the three under the secret the drone and its proxies share. The
/// drone answers with one line once the backend is ready and connected (it holds the
/// connection until then, within a bound), or with why not; then the connection carries
/// the backend's bytes.
///
///     proxy:  HANGAR-INGRESS 2 <backend id> <unix seconds> <nonce> <hex hmac of "2 <backend id> <unix seconds> <nonce>">\n
///     drone:  HANGAR-INGRESS OK\n      or      HANGAR-INGRESS NO <reason>\n  (and closes)
///
/// The nonce is 32 hex digits (128 random bits); a drone takes each nonce once
/// (`ReplayGuard`), so a captured preface cannot open a second connection. A connection
/// whose preface is malformed, stale, wrongly signed or replayed gets no answer.
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

    /// The preface for `backend`, signed now, with a fresh nonce.
    public static func make(
        backend: BackendID, secret: [UInt8], now: Int = Int(time(nil)), nonce: String = randomHex16() + randomHex16()
    ) -> String {
        "HANGAR-INGRESS 2 \(backend) \(now) \(nonce) \(hex(mac(backend: backend.rawValue, time: now, nonce: nonce, secret: secret)))\n"
    }

    static func mac(backend: String, time: Int, nonce: String, secret: [UInt8]) -> [UInt8] {
        let message = Array("2 \(backend) \(time) \(nonce)".utf8)
        var out = [UInt8](repeating: 0, count: 32)
        _ = hg_hmac_sha256(secret, secret.count, message, message.count, &out)
        return out
    }

    static func hex(_ bytes: [UInt8]) -> String {
        bytes.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
    }

    /// The backend id of a valid preface, or why it is refused. With `replays`, a nonce
    /// is taken once: a second preface with it is `replayed`.
    public static func verify(
        _ line: String, secret: [UInt8], now: Int = Int(time(nil)), replays: ReplayGuard? = nil
    ) -> Result<BackendID, IngressRefusal> {
        let fields = line.split(separator: " ", omittingEmptySubsequences: false)
        guard fields.count == 6, fields[0] == "HANGAR-INGRESS", fields[1] == "2" else {
            return .failure(.malformed)
        }
        // At most 12 plain digits: no sign, and no overflow in the window's arithmetic.
        guard (1...12).contains(fields[3].utf8.count), fields[3].utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }),
            let stamp = Int(fields[3]), let id = try? BackendID(String(fields[2])),
            fields[4].utf8.count == 32, fields[4].utf8.allSatisfy({ ($0 >= 48 && $0 <= 57) || ($0 >= 97 && $0 <= 102) })
        else { return .failure(.malformed) }
        guard abs(now - stamp) <= window else { return .failure(.expired) }
        let nonce = String(fields[4])
        let expected = Array(hex(mac(backend: String(fields[2]), time: stamp, nonce: nonce, secret: secret)).utf8)
        guard constantTimeEqual(Array(fields[5].utf8), expected) else {
            return .failure(.badSignature)
        }
        if let replays, !replays.firstUse(of: nonce, now: now) { return .failure(.replayed) }
        return .success(id)
    }
}

/// The nonces of the prefaces a drone accepted, kept as long as a preface with one could
/// still be within the time window: a nonce seen again is a replay. Two generations of
/// `2 × window` seconds each; at most `capacity` nonces, beyond which prefaces are refused
/// as replays until the older generation is dropped (a bound no honest proxy reaches:
/// about 8,000 new connections a second for two minutes).
public final class ReplayGuard: Sendable {
    /// A nonce's 128 bits (16 bytes a nonce, not a 32-character string).
    struct Key: Hashable {
        var high: UInt64
        var low: UInt64

        /// Nil for anything but 32 hex digits (`verify` lets nothing else through).
        init?(_ nonce: String) {
            guard nonce.utf8.count == 32, let high = UInt64(nonce.prefix(16), radix: 16),
                let low = UInt64(nonce.suffix(16), radix: 16)
            else { return nil }
            (self.high, self.low) = (high, low)
        }
    }

    private struct Generations {
        var current: Set<Key> = []
        var previous: Set<Key> = []
        var started = 0
    }

    private let state = Mutex(Generations())
    let span: Int
    let capacity: Int

    public init(window: Int = IngressPreface.window, capacity: Int = 1 << 20) {
        span = 2 * window
        self.capacity = capacity
    }

    /// True the first time `nonce` is seen (and it is recorded), false after (and for
    /// anything that is not a nonce).
    public func firstUse(of nonce: String, now: Int = Int(time(nil))) -> Bool {
        state.withLock { state in
            if now - state.started >= span {
                // A preface accepted in the previous generation is past its window by the
                // end of this one.
                state.previous = now - state.started >= 2 * span ? [] : state.current
                state.current = []
                state.started = now
            }
            guard let key = Key(nonce), !state.previous.contains(key), state.current.count + state.previous.count < capacity else { return false }
            return state.current.insert(key).inserted
        }
    }
}

/// Why an ingress connection was refused.
public enum IngressRefusal: String, Error, Sendable, CaseIterable {
    case malformed = "malformed preface"
    case expired = "preface outside the time window"
    case badSignature = "wrong signature"
    case replayed = "preface already used"
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
        case .replayed: "replayed"
        case .unknownBackend: "unknown-backend"
        case .notReady: "not-ready"
        case .ended: "ended"
        case .unreachable: "unreachable"
        }
    }
}

