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
        for time in ["-9223372036854775808", "9223372036854775807", "+1800000000", "1e9", "", "1800000000000"] {
            let hostile = "HANGAR-INGRESS 1 \(backend) \(time) " + String(repeating: "0", count: 64)
            #expect(IngressPreface.verify(hostile, secret: secret, now: 1_800_000_000) == .failure(.malformed), "\(time)")
        }
        #expect(IngressPreface.verify(body + " extra", secret: secret) == .failure(.malformed))
        #expect(IngressPreface.verify(body + "\r", secret: secret, now: 1_800_000_000) != .success(backend))
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
