import FoundationEssentials
import Glibc
import HangarClient
import HangarCore
import HangarTestSupport
import HummingbirdWSClient
import Logging
import NIOWebSocket
import Synchronization
import Testing

/// What an operator sees: JSON logs with backend and key ids from every role, Prometheus
/// metrics from every role, `hangar cluster --watch`, `hangar connect`'s wait, and `hangar
/// dev` as one process.
@Suite("operating hangar", .serialized, .timeLimit(.minutes(5)))
struct OperatorTests {
    /// The value of the sample `name` (with its labels, exactly) in Prometheus text.
    static func sample(_ text: String, _ name: String) -> Double? {
        for line in text.split(separator: "\n") where line.hasPrefix(name + " ") {
            return Double(line.dropFirst(name.count + 1))
        }
        return nil
    }

    /// GET /metrics from `port` with a real HTTP client (curl).
    static func scrape(_ port: Int) async throws -> String {
        let result = try await HangarProcess.run(program: "/usr/bin/curl", ["-sf", "http://127.0.0.1:\(port)/metrics"])
        guard result.status == 0 else { throw TestFailure("curl :\(port)/metrics: \(result)") }
        return result.stdout
    }

    /// The port in a "hangar: metrics on http://127.0.0.1:PORT/metrics" line.
    static func metricsPort(_ process: HangarProcess) async throws -> Int {
        try await process.waitForOutput("/metrics")
        guard let match = process.output.firstMatch(of: /metrics on http:\/\/127\.0\.0\.1:(\d+)\/metrics/),
            let port = Int(match.1)
        else { throw TestFailure("no metrics port in \(process.output)") }
        return port
    }

    /// Each line of a role's standard error as a JSON object of strings (every line must be one).
    static func records(_ stderr: String, role: String) -> [[String: String]] {
        stderr.split(separator: "\n").compactMap { line in
            let record = try? JSONDecoder().decode([String: String].self, from: Data(line.utf8))
            #expect(record != nil, "\(role) wrote a line that is not a JSON object: \(line.prefix(300))")
            return record
        }
    }

    @Test("JSON logs name the backend and key in every role; each role's /metrics counts what happened; cluster --watch; connect waits")
    func logsMetricsAndLoad() async throws {
        let json = ["--log-format", "json"]
        let stack = try await ProxyStack(
            proxyArguments: ["--metrics", "127.0.0.1:0", "--log-level", "debug"] + json,
            droneArguments: ["--metrics", "127.0.0.1:0"] + json, controllerArguments: json)
        let controllerURL = "http://127.0.0.1:\(stack.controllerPort)"
        let environment = ["HANGAR_CONTROLLER_TOKEN": stack.token]

        // `hangar connect` waits for ready, then prints the URL and how long it took.
        let connect = try await HangarProcess.run(
            ["connect", "ops-1", "--controller", controllerURL, "--image", "collab"],
            environment: environment)
        #expect(connect.status == 0, "\(connect)")
        let url = connect.stdout.split(separator: "\n").first.map(String.init) ?? ""
        #expect(url.hasPrefix("http://\(stack.cluster)/"), "\(connect)")
        guard let match = connect.stderr.firstMatch(of: /backend (bk-[0-9a-f]+) on dr-proxy \(spawned, ready in \d+\.\d\d s\)/) else {
            Issue.record("connect's last line: \(connect.stderr)")
            try await stack.stop()
            return
        }
        let id = try BackendID(String(match.1))
        let path = String(url.dropFirst("http://".count).drop { $0 != "/" })
        #expect(try ProxyStack.get(port: stack.proxyPort, path + "doc").status == 200)
        #expect(try ProxyStack.get(port: stack.proxyPort, "/no-such-token-at-all/").status == 410)

        let proxy = try await Self.scrape(try await Self.metricsPort(stack.proxy))
        #expect(Self.sample(proxy, "hangar_proxy_requests_total").map { $0 >= 2 } == true, "\(proxy)")
        #expect(Self.sample(proxy, "hangar_proxy_own_responses_total{status=\"410\"}") == 1, "\(proxy)")
        #expect(Self.sample(proxy, "hangar_proxy_routes") == 1, "\(proxy)")
        #expect(Self.sample(proxy, "hangar_proxy_controller_connected") == 1, "\(proxy)")
        #expect(Self.sample(proxy, "hangar_proxy_bytes_to_clients_total").map { $0 > 0 } == true, "\(proxy)")
        let drone = try await Self.scrape(try await Self.metricsPort(stack.drone))
        #expect(Self.sample(drone, "hangar_backends{status=\"ready\"}") == 1, "\(drone)")
        #expect(Self.sample(drone, "hangar_spawns_total") == 1, "\(drone)")
        #expect(drone.contains("hangar_backend_memory_bytes{backend=\"\(id)\""), "\(drone)")
        let controller = try await Self.scrape(stack.controllerPort)
        #expect(Self.sample(controller, "hangar_controller_spawns_total") == 1, "\(controller)")
        #expect(Self.sample(controller, "hangar_controller_drones_connected") == 1, "\(controller)")
        #expect(Self.sample(controller, "hangar_controller_proxies_connected") == 1, "\(controller)")

        // Live load: three frames, each with the drone and its backend.
        let watch = try await HangarProcess.run(
            ["cluster", "--controller", controllerURL, "--watch", "0.2", "--count", "3"], environment: environment)
        #expect(watch.status == 0, "\(watch)")
        #expect(watch.stdout.components(separatedBy: "every 0.2 s").count == 4, "\(watch.stdout)")
        #expect(watch.stdout.components(separatedBy: "1 ready").count == 4, "\(watch.stdout)")
        #expect(watch.stdout.components(separatedBy: "dr-proxy").count == 4, "\(watch.stdout)")
        let frames = try await HangarProcess.run(
            ["cluster", "--controller", controllerURL, "--watch", "0.1", "--count", "2", "--json"], environment: environment)
        let states = frames.stdout.split(separator: "\n").compactMap {
            try? JSONDecoder().decode(ClusterStateView.self, from: Data($0.utf8))
        }
        #expect(states.count == 2 && states.allSatisfy { $0.backends["ready"] == 1 }, "\(frames)")
        // Into a pipe, each frame comes as it is made (not when the buffer fills or at exit).
        let following = try HangarProcess.start(
            ["cluster", "--controller", controllerURL, "--watch", "0.2", "--json"], environment: environment)
        try await following.waitForOutput("\"cluster\":")
        following.signal(SIGTERM)
        _ = try await following.finish()
        _ = try await stack.client.connect(try stack.request(Self.hostileKey))

        // On a terminal (script(1) gives it one), one line follows the steps to ready.
        let shell = "\(HangarProcess.executable) connect ops-2 --controller \(controllerURL) --image python -- python3 -m http.server 8080"
        let onTerminal = try await HangarProcess.start(
            program: "/usr/bin/script", ["-qec", shell, "/dev/null"], environment: environment
        ).finish()
        #expect(onTerminal.status == 0, "\(onTerminal)")
        #expect(
            onTerminal.stdout.contains(/\r\u{1b}\[Kbackend bk-[0-9a-f]+ on dr-proxy: ready \(\d+\.\d\d s\)\r\u{1b}\[K/)
                && onTerminal.stdout.contains(/ready in \d+\.\d\d s\)/),
            "\(onTerminal.stdout.debugDescription)")
        _ = try await stack.client.terminate(id)
        try await eventually("terminated") { try await stack.client.status(id).status == "terminated" }
        let results = try await stack.stop()

        // Every line of every role is a JSON object; the backend's life is in the drone's
        // and the controller's, with its id and key.
        let proxyLog = Self.records(results[0].stderr, role: "proxy")
        let droneLog = Self.records(results[1].stderr, role: "drone")
        let controllerLog = Self.records(results[2].stderr, role: "controller")
        for message in ["backend scheduled", "backend ready", "backend terminated"] {
            #expect(
                droneLog.contains { $0["message"] == message && $0["backend.id"] == id.rawValue && $0["key"] == "ops-1" },
                "the drone logged \(message): \(results[1].stderr.suffix(2000))")
        }
        #expect(droneLog.contains { $0["message"] == "backend terminated" && $0["reason"] == "external" && $0["level"] == "info" })
        #expect(droneLog.allSatisfy { $0["time"]?.hasSuffix("Z") == true && $0["logger"] != nil })
        #expect(
            controllerLog.contains {
                $0["message"] == "backend scheduled" && $0["backend.id"] == id.rawValue && $0["key"] == "ops-1"
                    && $0["drone"] == "dr-proxy"
            }, "\(results[2].stderr.suffix(2000))")
        #expect(controllerLog.contains { $0["message"] == "backend termination requested" && $0["backend.id"] == id.rawValue })
        // A key a client chose to break lines and forge fields comes back exactly, in one field.
        for (role, log) in [("drone", droneLog), ("controller", controllerLog)] {
            #expect(log.contains { $0["message"] == "backend scheduled" && $0["key"] == Self.hostileKey }, "\(role)")
            #expect(!log.contains { $0["status"] == "forged" }, "\(role)")
        }
        #expect(
            proxyLog.contains { $0["status"] == "410" && $0["level"] == "debug" && $0["method"] == "GET" },
            "the proxy logged its 410 at debug: \(results[0].stderr.suffix(2000))")
    }

    /// Valid as a key (no C0 controls), hostile to a log line.
    static let hostileKey = "a\"b\\c d=e status=forged\u{85}\u{2028}x"

    @Test("the proxy counts each byte it sends once, heads included, while a tunnel is still open; a burst of connections is spread over its loops")
    func byteCounters() async throws {
        let stack = try await ProxyStack(proxyArguments: ["--metrics", "127.0.0.1:0", "--loops", "3"])
        let port = try await Self.metricsPort(stack.proxy)
        // Nine connections at once, open and idle: three on each loop (the kernel would
        // wake the first idle loop for each of them).
        try await eventually("the /ready checks' connections have closed") {
            (try await Self.scrape(port)).contains("hangar_proxy_open_connections 0")
        }
        let idle = try (0..<9).map { _ in try connectLoopback(UInt16(stack.proxyPort)) }
        try await eventually("nine connections carried") {
            Self.sample(try await Self.scrape(port), "hangar_proxy_open_connections") == 9
        }
        let spread = try await Self.scrape(port)
        for loop in 0..<3 {
            #expect(Self.sample(spread, "hangar_proxy_loop_connections{loop=\"\(loop)\"}") == 3, "\(spread)")
        }
        idle.forEach { close($0) }
        let response = try await stack.client.connect(try stack.request("bytes-1"))
        _ = try await stack.client.waitUntilReady(try BackendID(response.backend_id))
        let before = try await Self.scrape(port)
        let message = String(repeating: "x", count: 200_000)
        let during = Mutex("")
        try await WebSocketClient.connect(
            url: response.url.webSocketURL, configuration: .init(maxFrameSize: 1 << 20), logger: Logger(label: "test.ws")
        ) { inbound, outbound, _ in
            var iterator = inbound.messages(maxSize: 1 << 20).makeAsyncIterator()
            _ = try await iterator.next()  // the document as it was: empty
            try await outbound.write(.text(message))
            _ = try await iterator.next()  // the new document, to its sender too
            let now = try await Self.scrape(port)
            during.withLock { $0 = now }
            try await outbound.close(.normalClosure, reason: nil)
        }
        let after = during.withLock { $0 }
        func delta(_ name: String) -> Double { (Self.sample(after, name) ?? -1) - (Self.sample(before, name) ?? 0) }
        // Up: the upgrade's head (under 1 KiB with the x-verified fields) and one masked
        // 200,000-byte frame; down: the 101's head and two frames. Twice that would be
        // counting twice; nothing would be counting only at the end.
        let up = delta("hangar_proxy_bytes_to_backends_total")
        let down = delta("hangar_proxy_bytes_to_clients_total")
        #expect(up > 200_000 && up < 202_000, "to backends: \(up)")
        #expect(down > 200_000 && down < 202_000, "to clients: \(down)")
        #expect(delta("hangar_proxy_upgrades_total") == 1)
        try await stack.stop()
    }

    @Test("HANGAR_LOG_FORMAT and HANGAR_LOG_LEVEL are checked like the flags, naming where the value came from")
    func logEnvironment() async throws {
        let format = try await HangarProcess.run(["controller", "--store", ":memory:"], environment: ["HANGAR_LOG_FORMAT": "yaml"])
        #expect(format.status == 64 && format.stderr.contains("HANGAR_LOG_FORMAT (from the environment): \"yaml\" is not one of text, json"), "\(format)")
        let short = try await HangarProcess.run(["proxy"], environment: ["HANGAR_INGRESS_SECRET": "short"])
        #expect(short.status == 64 && short.stderr.contains("HANGAR_INGRESS_SECRET (the drones' ingress secret, at least 16 bytes)"), "\(short)")
        let level = try await HangarProcess.run(["proxy"], environment: ["HANGAR_LOG_LEVEL": "chatty"])
        #expect(level.status == 64 && level.stderr.contains("HANGAR_LOG_LEVEL (from the environment): \"chatty\""), "\(level)")
    }

    @Test("hangar dev: one process runs a backend reached through its proxy; /metrics has all three roles; SIGTERM ends it and every backend")
    func dev() async throws {
        await HangarProcess.endLeftovers()
        let directory = try TemporaryDirectory("hangar-dev")
        let api = Int(try freeLoopbackPort())
        let proxyPort = Int(try freeLoopbackPort())
        let cgroupParent = "hangar-dev-" + randomHex16().prefix(6)
        let dev = try HangarProcess.start(
            ["dev", "--state-dir", directory.path + "/state", "--api", "127.0.0.1:\(api)", "--proxy", "127.0.0.1:\(proxyPort)"],
            environment: ["HANGAR_CGROUP_PARENT": cgroupParent])
        try await dev.waitForOutput("From another shell")
        let connect = try await HangarProcess.run(
            ["connect", "dev-1", "--controller", "http://127.0.0.1:\(api)", "--image", "collab"])
        #expect(connect.status == 0, "\(connect)")
        let url = connect.stdout.split(separator: "\n").first.map(String.init) ?? ""
        #expect(url.hasPrefix("http://localhost:\(proxyPort)/"), "\(connect)")
        // A real client through the proxy, by the URL as printed (Host: localhost:PORT).
        let fetched = try await HangarProcess.run(
            program: "/usr/bin/curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}", "--resolve", "localhost:\(proxyPort):127.0.0.1", url + "doc"])
        #expect(fetched.stdout == "200", "\(fetched)")
        // The README's session: `hangar ws "${URL}ws"`, a line typed, the document back.
        let session = try await HangarProcess.run(
            program: "/bin/sh", ["-c", "(echo hello; sleep 1) | '\(HangarProcess.executable)' ws '\(url)ws'"])
        #expect(session.status == 0 && session.stdout == "\nhello\n", "\(session)")

        let metrics = try await Self.scrape(api)
        #expect(Self.sample(metrics, "hangar_controller_spawns_total") == 1, "\(metrics)")
        #expect(Self.sample(metrics, "hangar_backends{status=\"ready\"}") == 1, "\(metrics)")
        #expect(Self.sample(metrics, "hangar_proxy_routes") == 1, "\(metrics)")
        #expect(Self.sample(metrics, "hangar_proxy_requests_total").map { $0 >= 1 } == true, "\(metrics)")

        dev.signal(SIGTERM)
        let ended = try await dev.finish()
        #expect(ended.status == 0, "\(ended.stderr.suffix(2000))")
        #expect(HostState.processesWithSandboxUIDs().isEmpty, "hangar dev left sandbox processes")
        #expect(HostState.sandboxCgroups(parent: cgroupParent).isEmpty, "hangar dev left sandbox cgroups")
        HostState.removeCgroupParent(cgroupParent)
        directory.remove()
    }
}
