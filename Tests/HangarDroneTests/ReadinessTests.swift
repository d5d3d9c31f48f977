import Glibc
import HangarCore
import HangarDrone
import HangarPolicy
import HangarSandbox
import HangarTestSupport
import Testing

/// Probing and reaching a backend inside its own network namespace, with real servers.
@Suite("Readiness and ingress", .serialized, .timeLimit(.minutes(2)))
struct ReadinessTests {
    let before = HostState.capture()

    @Test("a real HTTP server becomes ready and answers through a connection made in its namespace")
    func httpServer() async throws {
        var spec = SandboxSpec(
            image: try TestSandbox.image("python"),
            command: [
                "sh", "-c", "echo served-from-inside > /tmp/page; cd /tmp; exec python3 -m http.server 8080 --bind 127.0.0.1",
            ])
        let null = open("/dev/null", O_RDWR | O_CLOEXEC)
        defer { close(null) }
        spec.stdio = (null, null, null)
        let sandbox = try await TestSandbox.runtime.spawn(spec)
        #expect(!Readiness.answers(sandbox, port: 8081, probe: .tcp), "nothing listens on 8081")
        let ready = await Readiness.wait(for: sandbox, port: 8080, probe: .http, timeout: .seconds(30))
        #expect(ready)

        let fd = try sandbox.connect(port: 8080)
        let request = "GET /page HTTP/1.0\r\n\r\n"
        _ = request.utf8CString.withUnsafeBufferPointer { write(fd, $0.baseAddress, $0.count - 1) }
        let response = try readToEnd(fd)
        close(fd)
        let text = String(decoding: response, as: UTF8.self)
        #expect(text.hasPrefix("HTTP/1.0 200"), "\(text.prefix(80))")
        #expect(text.hasSuffix("served-from-inside\n"), "the file the sandbox wrote")
        sandbox.signal(SIGTERM)
        _ = await sandbox.outcome()
        #expect(!Readiness.answers(sandbox, port: 8080, probe: .tcp), "an ended sandbox answers nothing")
        await expectHostRestored(before)
    }

    @Test("a backend that never listens is not ready by the deadline; the host's own port is not its")
    func neverListens() async throws {
        var spec = try TestSandbox.shell("sleep 30")
        spec.stdio = (0, 1, 2)
        let sandbox = try await TestSandbox.runtime.spawn(spec)
        let start = ContinuousClock.now
        let ready = await Readiness.wait(for: sandbox, port: 8080, probe: .tcp, timeout: .milliseconds(400))
        #expect(!ready)
        #expect(ContinuousClock.now - start < .seconds(5))
        sandbox.kill()
        _ = await sandbox.outcome()
        await expectHostRestored(before)
    }
}
