import CShims
import Glibc
import HangarCore
import HangarProxy
import HangarSandbox
import HangarTestSupport
import Logging
import Synchronization
import Testing

/// A drone's ingress port that misbehaves, seen from the proxy: garbage, silence, a close,
/// an answer without an end, a refusal. The proxy (in this process, its routes pinned to
/// the fake port) answers each in bounded time and stays healthy; each connection it opened
/// had a fresh, version 2 preface.
@Suite("a hostile ingress", .serialized, .timeLimit(.minutes(2)))
struct HostileIngressTests {
    /// What the fake ingress does once it has read a preface; the route's token.
    enum Manner: String, CaseIterable {
        case garbage, silence, close, endless, ended, ok
    }

    /// A loopback listener that reads each connection's preface line, then behaves as its
    /// port's manner says.
    final class FakeIngress: Sendable {
        let fd: Int32
        let port: UInt16
        let manner: Manner
        let prefaces = Mutex<[String]>([])
        /// Connections held open in silence, closed at the end.
        let held = Mutex<[Int32]>([])

        init(_ manner: Manner) throws {
            var bound: UInt16 = 0
            fd = hg_listen_tcp4("127.0.0.1", 0, 64, 0, &bound)
            guard fd >= 0 else { throw TestFailure("listen: \(fd)") }
            port = bound
            self.manner = manner
            let started = startThread { [self] in
                while true {
                    let client = accept(fd, nil, nil)
                    guard client >= 0 else { return }
                    serve(client)
                }
            }
            guard started == 0 else { throw TestFailure("thread: \(started)") }
        }

        func serve(_ client: Int32) {
            var line: [UInt8] = []
            var byte: UInt8 = 0
            while read(client, &byte, 1) == 1, byte != 10, line.count < 512 { line.append(byte) }
            prefaces.withLock { $0.append(String(decoding: line, as: UTF8.self)) }
            switch manner {
            case .garbage: try? writeAll(client, Array("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi".utf8))
            case .silence:
                held.withLock { $0.append(client) }
                return
            case .close: break
            case .endless: try? writeAll(client, [UInt8](repeating: UInt8(ascii: "A"), count: 8192))
            case .ended: try? writeAll(client, Array(IngressPreface.refused(.ended).utf8))
            case .ok:
                try? writeAll(client, Array((IngressPreface.accepted + "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").utf8))
            }
            shutdown(client, Int32(SHUT_WR))
            var sink = [UInt8](repeating: 0, count: 4096)
            while read(client, &sink, sink.count) > 0 {}
            close(client)
        }

        func stop() {
            shutdown(fd, Int32(SHUT_RDWR))
            close(fd)
            held.withLock { $0.forEach { close($0) } }
        }
    }

    @Test("garbage, silence, a close, an endless line or a refusal from the drone: 502, 504 or 410 in bounded time; the proxy stays healthy")
    func misbehavingDrones() async throws {
        let secret = Array("an ingress secret of enough bytes".utf8)
        let cluster = try ClusterName("hostile.test:1")
        var settings = ProxyConfiguration(cluster: cluster, ingressSecret: secret)
        settings.readyTimeout = .seconds(1)
        var logger = Logger(label: "test.proxy")
        logger.logLevel = .warning
        let proxy = try Proxy(
            configuration: settings, link: RouteLinkConfiguration(url: "http://127.0.0.1:1", cluster: cluster), logger: logger)
        var fakes: [Manner: FakeIngress] = [:]
        for manner in Manner.allCases {
            let fake = try FakeIngress(manner)
            fakes[manner] = fake
            proxy.routes.pin(
                manner.rawValue,
                to: ProxyRoute(
                    backend_id: BackendID.random().rawValue, grant: 1, expires_at: nil, subdomain: nil, drone: "fake",
                    ingress: "127.0.0.1:\(fake.port)", status: "ready", user: nil, auth: "{}", secret_token: "s"))
        }
        let running = Task { try await proxy.run() }
        func status(_ token: String) throws -> (Int, Duration) {
            let started = ContinuousClock.now
            let connection = try HTTPExchange(port: Int(proxy.port))
            try connection.send("GET /\(token)/x HTTP/1.1\r\nHost: \(cluster)\r\n\r\n")
            return (try connection.response().status, ContinuousClock.now - started)
        }
        try await eventually("the proxy accepts") { (try? status("ok").0) == 200 }
        let expected: [Manner: Int] = [.garbage: 502, .silence: 504, .close: 502, .endless: 502, .ended: 410, .ok: 200]
        for _ in 0..<3 {
            for manner in Manner.allCases {
                let (answer, took) = try status(manner.rawValue)
                #expect(answer == expected[manner], "\(manner): \(answer)")
                #expect(took < .seconds(5), "\(manner): \(took)")
            }
        }
        #expect(try status("ok").0 == 200, "still healthy")
        // Every connection had its own preface: version 2, a fresh nonce, valid under the secret.
        let prefaces = fakes.values.flatMap { $0.prefaces.withLock { $0 } }
        #expect(prefaces.count >= 19)
        #expect(Set(prefaces.map { $0.split(separator: " ")[4] }).count == prefaces.count, "a nonce per connection")
        let replays = ReplayGuard()
        #expect(prefaces.allSatisfy { (try? IngressPreface.verify($0, secret: secret, replays: replays).get()) != nil })
        running.cancel()
        _ = try? await running.value
        fakes.values.forEach { $0.stop() }
    }
}
