import HangarCore
import Testing

/// The ingress preface and the drone's answer line, as text: what is accepted, and that
/// nothing else is.
@Suite("Ingress lines")
struct IngressTests {
    let secret = Array("an ingress secret of enough bytes".utf8)

    @Test("a preface made now verifies; another secret, another time, a tampered line or a hostile time does not")
    func prefaces() throws {
        let backend = try BackendID("bk-0123456789abcdef")
        let line = IngressPreface.make(backend: backend, secret: secret, now: 1_800_000_000)
        let body = String(line.dropLast())
        #expect(try IngressPreface.verify(body, secret: secret, now: 1_800_000_030).get() == backend)
        #expect(IngressPreface.verify(body, secret: Array("another secret of enough bytes".utf8), now: 1_800_000_000) == .failure(.badSignature))
        #expect(IngressPreface.verify(body, secret: secret, now: 1_800_000_061) == .failure(.expired))
        #expect(IngressPreface.verify(body.uppercased(), secret: secret, now: 1_800_000_000) == .failure(.malformed))
        let nonce = String(repeating: "ab", count: 16)
        for time in ["-9223372036854775808", "9223372036854775807", "+1800000000", "1e9", "", "1800000000000"] {
            let hostile = "HANGAR-INGRESS 2 \(backend) \(time) \(nonce) " + String(repeating: "0", count: 64)
            #expect(IngressPreface.verify(hostile, secret: secret, now: 1_800_000_000) == .failure(.malformed), "\(time)")
        }
        for bad in ["", "AB" + nonce.dropFirst(2), String(nonce.dropFirst()), nonce + "0", String(repeating: "g", count: 32)] {
            let hostile = "HANGAR-INGRESS 2 \(backend) 1800000000 \(bad) " + String(repeating: "0", count: 64)
            #expect(IngressPreface.verify(hostile, secret: secret, now: 1_800_000_000) == .failure(.malformed), "nonce \(bad)")
        }
        // A version 1 preface (no nonce) is refused.
        let old = "HANGAR-INGRESS 1 \(backend) 1800000000 " + String(repeating: "0", count: 64)
        #expect(IngressPreface.verify(old, secret: secret, now: 1_800_000_000) == .failure(.malformed))
        // The nonce is signed: another nonce under the same signature is refused.
        let fields = body.split(separator: " ")
        let swapped = (fields[0..<4] + [Substring(nonce)] + [fields[5]]).joined(separator: " ")
        #expect(IngressPreface.verify(swapped, secret: secret, now: 1_800_000_000) == .failure(.badSignature))
        #expect(IngressPreface.verify(body + " extra", secret: secret) == .failure(.malformed))
        #expect(IngressPreface.verify(body + "\r", secret: secret, now: 1_800_000_000) != .success(backend))
    }

    @Test("a nonce opens one connection: the same preface again is a replay, for as long as it is within the window")
    func replays() throws {
        let backend = try BackendID("bk-0123456789abcdef")
        let replays = ReplayGuard(window: 60, capacity: 4)
        let first = String(IngressPreface.make(backend: backend, secret: secret, now: 1_800_000_000).dropLast())
        #expect(try IngressPreface.verify(first, secret: secret, now: 1_800_000_000, replays: replays).get() == backend)
        for later in [1_800_000_000, 1_800_000_059, 1_800_000_060] {
            #expect(IngressPreface.verify(first, secret: secret, now: later, replays: replays) == .failure(.replayed), "at +\(later - 1_800_000_000) s")
        }
        // Two prefaces of the same backend in the same second are two connections.
        let second = String(IngressPreface.make(backend: backend, secret: secret, now: 1_800_000_000).dropLast())
        #expect(first != second)
        #expect(try IngressPreface.verify(second, secret: secret, now: 1_800_000_001, replays: replays).get() == backend)
        // Generations: a nonce is remembered at least 2 × window after it was taken.
        let (n1, n2, n3) = (String(repeating: "1", count: 32), String(repeating: "2", count: 32), String(repeating: "3", count: 32))
        let guardOnly = ReplayGuard(window: 60, capacity: 100)
        #expect(!guardOnly.firstUse(of: "n1", now: 1000), "not a nonce: refused")
        #expect(guardOnly.firstUse(of: n1, now: 1000))
        #expect(!guardOnly.firstUse(of: n1, now: 1119))
        #expect(guardOnly.firstUse(of: n2, now: 1120))  // a new generation: n1 is in the previous one
        #expect(!guardOnly.firstUse(of: n1, now: 1239))
        #expect(guardOnly.firstUse(of: n3, now: 1240))  // n1's generation is dropped now
        #expect(guardOnly.firstUse(of: n1, now: 1241), "long past any window: (its preface would be expired anyway)")
        // Full: refused, never grown past its bound.
        let (na, nb, nc) = (String(repeating: "a", count: 32), String(repeating: "b", count: 32), String(repeating: "c", count: 32))
        let full = ReplayGuard(window: 60, capacity: 2)
        #expect(full.firstUse(of: na, now: 0) && full.firstUse(of: nb, now: 0))
        #expect(!full.firstUse(of: nc, now: 1))
    }

    @Test("the drone's answer: OK, NO with a known reason, an unknown reason as unreachable, anything else malformed")
    func answers() {
        func answer(_ text: String) -> IngressRefusal?? { IngressPreface.answer(Array(text.utf8)) }
        #expect(answer("HANGAR-INGRESS OK") == .some(nil))
        #expect(answer("HANGAR-INGRESS NO not-ready") == .some(.notReady))
        #expect(answer("HANGAR-INGRESS NO ended") == .some(.ended))
        #expect(answer("HANGAR-INGRESS NO whatever") == .some(.unreachable))
        for garbage in ["HANGAR-INGRESS OK\r", "HTTP/1.1 200 OK", "", "hangar-ingress ok", "HANGAR-INGRESS  OK"] {
            #expect(answer(garbage) == nil, "\(garbage.debugDescription)")
        }
        for refusal in IngressRefusal.allCases {
            #expect(answer(String(IngressPreface.refused(refusal).dropLast())) == .some(refusal))
        }
    }
}
