import ArgumentParser
import Glibc
import HangarCore
import HangarProxy
import HangarSandbox
import Logging
import Synchronization
import CShims

/// `hangar bench proxy`: the proxy's data plane against the same traffic sent straight to
/// the backend and through haproxy (splice forced, 1 MiB pipes), in the same run.
struct ProxyBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "proxy",
        abstract: "Throughput, WebSocket round trips and CPU of the proxy, against direct and haproxy.",
        discussion: """
            The backend is a server of this process on loopback (a thread per connection) that \
            answers the drone's ingress preface as a drone does, so what is measured is the \
            proxy alone: its token route is pinned, not asked of a controller. Cases: one \
            download of --stream-gib GiB (HTTP, Content-Length); --websockets WebSocket \
            connections at once, each receiving --websocket-mib MiB of binary frames after its \
            101; --round-trips round trips of a 64-byte message over one WebSocket. haproxy \
            (Debian's) runs with `option splice-request`, `option splice-response`, \
            `tune.pipesize 1048576` and as many threads as the proxy has loops. CPU is the \
            proxy's own (its loop threads; haproxy's process) per GiB moved.
            """)

    @Option(help: "GiB of the single stream.") var streamGib = 2
    @Option(help: "Concurrent WebSocket streams.") var websockets = 64
    @Option(help: "MiB each WebSocket stream receives.") var websocketMib = 32
    @Option(help: "WebSocket round trips measured (after 1000 unmeasured).") var roundTrips = 20_000
    @Option(help: "The proxy's loops and haproxy's threads.") var loops = 2
    @Option(help: ArgumentHelp("Which paths to run, comma-separated.", valueName: "list"))
    var only = "direct,hangar,haproxy"
    @Option(help: ArgumentHelp("Also write the JSON to this file.", valueName: "path")) var json: String?

    var contenders: [String] { only.split(separator: ",").map { String($0) } }

    func validate() throws {
        if !(1...64).contains(streamGib) { throw ValidationError("--stream-gib must be 1...64, got \(streamGib)") }
        if !(1...1024).contains(websockets) { throw ValidationError("--websockets must be 1...1024, got \(websockets)") }
        if !(1...4096).contains(websocketMib) { throw ValidationError("--websocket-mib must be 1...4096, got \(websocketMib)") }
        if !(100...10_000_000).contains(roundTrips) { throw ValidationError("--round-trips must be 100...10000000, got \(roundTrips)") }
        if !(1...64).contains(loops) { throw ValidationError("--loops must be 1...64, got \(loops)") }
        let unknown = Set(contenders).subtracting(["direct", "hangar", "haproxy"])
        if !unknown.isEmpty || contenders.isEmpty || Set(contenders).count != contenders.count {
            throw ValidationError("--only: direct, hangar and/or haproxy, each once, got \"\(only)\"")
        }
    }

    struct Target {
        var name: String
        var port: UInt16
        /// Put in front of every path (the hangar proxy's token).
        var prefix: String
        /// The proxy's CPU seconds so far (nil: none, direct).
        var cpu: (() -> Double)?
    }

    struct Result {
        var name: String
        var streamGiBps: Double
        var streamCPU: Double?
        var webSocketsGiBps: Double
        var webSocketsCPU: Double?
        var p50: Double
        var p99: Double
    }

    func run() async throws {
        let backend = try BenchBackend()
        var targets: [Target] = []
        var haproxy: pid_t?
        let directory = try makeTemporaryDirectory(prefix: "hangar-bench-proxy")
        defer {
            if let haproxy {
                kill(haproxy, SIGTERM)
                var status: Int32 = 0
                waitpid(haproxy, &status, 0)
            }
            try? spawnAndWait(["/bin/rm", "-rf", directory], stdio: 2)
        }
        for name in contenders {
            switch name {
            case "direct":
                targets.append(Target(name: "direct", port: backend.port, prefix: "", cpu: nil))
            case "hangar":
                let secret = Array(randomHex16().utf8) + Array(randomHex16().utf8)
                var settings = ProxyConfiguration(cluster: try ClusterName("bench.local:1"), ingressSecret: secret)
                settings.loops = loops
                let proxy = try Proxy(
                    configuration: settings,
                    link: RouteLinkConfiguration(url: "http://127.0.0.1:1", cluster: try ClusterName("bench.local:1")),
                    logger: Logger(label: "bench.proxy", factory: { _ in SwiftLogNoOpLogHandler() }))
                proxy.routes.pin(
                    "bench",
                    to: ProxyRoute(
                        backend_id: BackendID.random().rawValue, grant: 1, expires_at: nil, subdomain: nil, drone: "bench",
                        ingress: "127.0.0.1:\(backend.port)", status: "ready", user: nil, auth: "{}", secret_token: "s"))
                Task { try await proxy.run() }
                try await waitUntilAccepting(proxy.port)
                targets.append(
                    Target(name: "hangar", port: proxy.port, prefix: "/bench") {
                        proxy.loopThreadIDs.reduce(0) { $0 + cpuSeconds("/proc/self/task/\($1)/stat") }
                    })
            case "haproxy":
                guard let program = findExecutable("haproxy") else {
                    throw BenchError("haproxy is not installed (scripts/install-deps.sh installs it)")
                }
                let port = try freeLoopbackPort()
                let config = """
                    global
                        nbthread \(loops)
                        maxconn 4096
                        tune.pipesize 1048576
                    defaults
                        mode http
                        option splice-request
                        option splice-response
                        timeout connect 5s
                        timeout client 120s
                        timeout server 120s
                        timeout tunnel 120s
                    frontend bench
                        bind 127.0.0.1:\(port)
                        default_backend backend
                    backend backend
                        server one 127.0.0.1:\(backend.port)

                    """
                let path = directory + "/haproxy.cfg"
                try writeReport(config, to: path)
                let pid = try spawnProcess([program, "-db", "-q", "-f", path], stdio: [nil, nil, nil])
                haproxy = pid
                try await waitUntilAccepting(port)
                targets.append(Target(name: "haproxy", port: port, prefix: "") { cpuSeconds("/proc/\(pid)/stat") })
            default: break
            }
        }

        var results: [Result] = []
        for target in targets {
            FileHandleStandardError.write("bench proxy: \(target.name)…\n")
            let stream = try measure(target) { try Self.download(target, bytes: streamGib << 30) }
            let sockets = try measure(target) {
                try Self.webSocketStreams(target, count: websockets, bytes: websocketMib << 20)
            }
            let latency = try Self.roundTrips(target, count: roundTrips)
            results.append(
                Result(
                    name: target.name, streamGiBps: Double(streamGib) / stream.seconds, streamCPU: stream.cpu.map { $0 / Double(streamGib) },
                    webSocketsGiBps: Double(websockets * websocketMib) / 1024 / sockets.seconds,
                    webSocketsCPU: sockets.cpu.map { $0 / (Double(websockets * websocketMib) / 1024) },
                    p50: latency.percentile(0.5), p99: latency.percentile(0.99)))
        }
        let direct = results.first { $0.name == "direct" }
        print(Self.table(results, direct: direct))
        let line = Self.json(results, direct: direct)
        print(line)
        try writeReport(line, to: json)
    }

    /// Seconds a case took, and the proxy's CPU seconds during it.
    func measure(_ target: Target, _ body: () throws -> Void) throws -> (seconds: Double, cpu: Double?) {
        let cpuBefore = target.cpu?()
        let start = ContinuousClock.now
        try body()
        let seconds = (ContinuousClock.now - start).milliseconds / 1000
        return (seconds, target.cpu.map { $0() - cpuBefore! })
    }

    static func download(_ target: Target, bytes: Int) throws {
        let connection = try BenchConnection(port: target.port)
        try connection.send("GET \(target.prefix)/stream?\(bytes) HTTP/1.1\r\nHost: bench.local:1\r\n\r\n")
        let head = try connection.head()
        guard head.hasPrefix("HTTP/1.1 200") else { throw BenchError("\(target.name): \(head.prefix(80))") }
        let got = try connection.drain(upTo: bytes)
        guard got == bytes else { throw BenchError("\(target.name): \(got) of \(bytes) bytes") }
    }

    static func upgrade(_ target: Target, _ query: String) throws -> BenchConnection {
        let connection = try BenchConnection(port: target.port)
        try connection.send(
            "GET \(target.prefix)/ws?\(query) HTTP/1.1\r\nHost: bench.local:1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        let head = try connection.head()
        guard head.hasPrefix("HTTP/1.1 101") else { throw BenchError("\(target.name): \(head.prefix(80))") }
        return connection
    }

    /// `count` WebSockets at once, each receiving `bytes` of frames until the backend ends it.
    static func webSocketStreams(_ target: Target, count: Int, bytes: Int) throws {
        let connections = try (0..<count).map { _ in try upgrade(target, "\(bytes)") }
        let failures = Atomic<Int>(0)
        let done = Atomic<Int>(0)
        for connection in connections {
            let started = startThread {
                if (try? connection.drain(upTo: Int.max)) ?? 0 < bytes { failures.add(1, ordering: .relaxed) }
                done.add(1, ordering: .releasing)
            }
            guard started == 0 else { throw BenchError("could not start a client thread") }
        }
        while done.load(ordering: .acquiring) < count { usleep(1000) }
        guard failures.load(ordering: .relaxed) == 0 else { throw BenchError("\(target.name): a WebSocket stream fell short") }
    }

    /// Round trips of a 64-byte masked binary frame over one WebSocket (echoed).
    static func roundTrips(_ target: Target, count: Int) throws -> Measurement {
        let connection = try upgrade(target, "echo")
        var frame: [UInt8] = [0x82, 0x80 | 58, 1, 2, 3, 4]
        frame += [UInt8](repeating: 0x61, count: 58)
        var samples: [Duration] = []
        samples.reserveCapacity(count)
        for index in 0..<(count + 1000) {
            let start = ContinuousClock.now
            try connection.send(frame)
            guard try connection.drain(upTo: frame.count) == frame.count else { throw BenchError("\(target.name): echo ended") }
            if index >= 1000 { samples.append(ContinuousClock.now - start) }
        }
        return Measurement(name: target.name, samples: samples)
    }

    static func table(_ results: [Result], direct: Result?) -> String {
        func ratio(_ value: Double, _ base: Double?) -> String {
            guard let base, base > 0 else { return "" }
            return " (\(fixed(value / base, 2))×)"
        }
        var lines = ["proxy: throughput, WebSocket round trips and CPU (GiB/s; µs; CPU s/GiB of the proxy)"]
        lines.append(pad("path", 10) + pad("1 stream GiB/s", 20) + pad("WebSockets GiB/s", 20) + pad("RTT p50", 10) + pad("RTT p99", 10) + pad("added p50", 11) + "CPU s/GiB")
        for result in results {
            let added = direct.map { fixed((result.p50 - $0.p50) * 1000, 1) } ?? "-"
            lines.append(
                pad(result.name, 10) + pad(fixed(result.streamGiBps, 2) + ratio(result.streamGiBps, direct?.streamGiBps), 20)
                    + pad(fixed(result.webSocketsGiBps, 2) + ratio(result.webSocketsGiBps, direct?.webSocketsGiBps), 20)
                    + pad(fixed(result.p50 * 1000, 1), 10) + pad(fixed(result.p99 * 1000, 1), 10)
                    + pad(result.name == "direct" ? "-" : added, 11)
                    + (result.streamCPU.map { fixed($0, 3) + " / " + fixed(result.webSocketsCPU ?? 0, 3) } ?? "-"))
        }
        return lines.joined(separator: "\n")
    }

    static func json(_ results: [Result], direct: Result?) -> String {
        let entries = results.map { result in
            var fields = [
                "\"name\": \"\(result.name)\"", "\"stream_gib_per_s\": \(fixed(result.streamGiBps, 3))",
                "\"websockets_gib_per_s\": \(fixed(result.webSocketsGiBps, 3))",
                "\"rtt_p50_us\": \(fixed(result.p50 * 1000, 1))", "\"rtt_p99_us\": \(fixed(result.p99 * 1000, 1))",
            ]
            if let direct, result.name != "direct" {
                fields.append("\"added_p50_us\": \(fixed((result.p50 - direct.p50) * 1000, 1))")
                fields.append("\"stream_of_direct\": \(fixed(result.streamGiBps / direct.streamGiBps, 3))")
                fields.append("\"websockets_of_direct\": \(fixed(result.webSocketsGiBps / direct.webSocketsGiBps, 3))")
            }
            if let cpu = result.streamCPU { fields.append("\"stream_cpu_s_per_gib\": \(fixed(cpu, 3))") }
            if let cpu = result.webSocketsCPU { fields.append("\"websockets_cpu_s_per_gib\": \(fixed(cpu, 3))") }
            return "{" + fields.joined(separator: ", ") + "}"
        }
        return "{\"benchmark\": \"proxy\", \"results\": [\(entries.joined(separator: ", "))]}"
    }

    static func fixed(_ value: Double, _ decimals: Int) -> String {
        var scale = 1.0
        for _ in 0..<decimals { scale *= 10 }
        let text = "\((value * scale).rounded() / scale)"
        guard let dot = text.firstIndex(of: ".") else { return text }
        let have = text.distance(from: dot, to: text.endIndex) - 1
        return have < decimals ? text + String(repeating: "0", count: decimals - have) : text
    }

    static func pad(_ text: String, _ width: Int) -> String {
        text.count >= width ? text + " " : text + String(repeating: " ", count: width - text.count)
    }
}

/// utime + stime of a /proc stat file, in seconds.
func cpuSeconds(_ path: String) -> Double {
    guard let text = readTextFile(path), let close = text.lastIndex(of: ")") else { return 0 }
    let fields = text[text.index(after: close)...].split(separator: " ")
    // After the command: state is field 3, utime 14 and stime 15 (1-based in proc(5)).
    guard fields.count > 13, let user = Double(fields[11]), let system = Double(fields[12]) else { return 0 }
    return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
}

/// A port free now on 127.0.0.1.
func freeLoopbackPort() throws -> UInt16 {
    var bound: UInt16 = 0
    let fd = hg_listen_tcp4("127.0.0.1", 0, 1, 0, &bound)
    guard fd >= 0 else { throw BenchError("no free port: \(String(cString: strerror(-fd)))") }
    close(fd)
    return bound
}

/// Waits until something accepts on 127.0.0.1:`port` (10 s at most).
func waitUntilAccepting(_ port: UInt16) async throws {
    for _ in 0..<1000 {
        if (try? BenchConnection(port: port)) != nil { return }
        try await Task.sleep(for: .milliseconds(10))
    }
    throw BenchError("nothing accepts on 127.0.0.1:\(port)")
}

/// A blocking client connection of the benchmark.
final class BenchConnection: @unchecked Sendable {
    let fd: Int32
    private var buffer = [UInt8](repeating: 0, count: 1 << 20)

    init(port: UInt16) throws {
        fd = hg_connect_tcp4("127.0.0.1", port, 0)
        guard fd >= 0 else { throw BenchError("connect to 127.0.0.1:\(port): \(String(cString: strerror(-fd)))") }
    }

    deinit { close(fd) }

    func send(_ text: String) throws { try send(Array(text.utf8)) }

    func send(_ bytes: [UInt8]) throws {
        var offset = 0
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBufferPointer { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { throw BenchError("send: errno \(errno)") }
            offset += n
        }
    }

    /// The response head, read a byte at a time (nothing after it is consumed).
    func head() throws -> String {
        var head: [UInt8] = []
        var byte: UInt8 = 0
        while !head.suffix(4).elementsEqual([13, 10, 13, 10]) {
            guard read(fd, &byte, 1) == 1 else { throw BenchError("the connection ended in a head") }
            head.append(byte)
        }
        return String(decoding: head, as: UTF8.self)
    }

    /// Reads and drops up to `limit` bytes (until EOF if that comes first); how many.
    func drain(upTo limit: Int) throws -> Int {
        var total = 0
        while total < limit {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, min($0.count, limit - total)) }
            if n < 0 && errno == EINTR { continue }
            if n < 0 { throw BenchError("read: errno \(errno)") }
            if n == 0 { break }
            total += n
        }
        return total
    }
}

/// The benchmark's backend: a thread per connection on 127.0.0.1. It answers an ingress
/// preface as a drone does, then `GET /stream?N` (N bytes, Content-Length), `GET /ws?N`
/// (a 101, then N bytes of 1 MiB binary frames, then the end) and `GET /ws?echo` (a 101,
/// then every byte back).
final class BenchBackend: Sendable {
    let listener: Int32
    let port: UInt16

    init() throws {
        var bound: UInt16 = 0
        let fd = hg_listen_tcp4("127.0.0.1", 0, 1024, 0, &bound)
        guard fd >= 0 else { throw BenchError("backend listener: \(String(cString: strerror(-fd)))") }
        listener = fd
        port = bound
        guard startThread({ [self] in acceptLoop() }) == 0 else { throw BenchError("backend thread") }
    }

    private func acceptLoop() {
        while true {
            let client = hg_accept_cloexec(listener)
            if client < 0 { continue }
            if startThread({ Self.serve(client) }) != 0 { close(client) }
        }
    }

    static func serve(_ fd: Int32) {
        defer { close(fd) }
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        guard var head = readHead(fd) else { return }
        if head.hasPrefix("HANGAR-INGRESS ") {
            guard write(fd, IngressPreface.accepted) else { return }
            head = String(head.drop { $0 != "\n" }.dropFirst())
            if !head.contains("\r\n\r\n") { guard let rest = readHead(fd) else { return }; head += rest }
        }
        let target = head.split(separator: " ", maxSplits: 2).dropFirst().first ?? ""
        let query = target.split(separator: "?").dropFirst().first.map(String.init) ?? ""
        var chunk = [UInt8](repeating: 0x5a, count: 1 << 20)
        if target.hasPrefix("/stream"), let bytes = Int(query) {
            guard write(fd, "HTTP/1.1 200 OK\r\ncontent-length: \(bytes)\r\n\r\n") else { return }
            var left = bytes
            while left > 0 {
                let n = chunk.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, min($0.count, left), Int32(MSG_NOSIGNAL)) }
                if n <= 0 { return }
                left -= n
            }
        } else if target.hasPrefix("/ws") {
            guard write(fd, "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\nsec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n") else { return }
            if query == "echo" {
                while true {
                    let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                    if n <= 0 { return }
                    guard chunk.withUnsafeBytes({ Glibc.send(fd, $0.baseAddress, n, Int32(MSG_NOSIGNAL)) }) == n else { return }
                }
            }
            // Binary frames of 1 MiB: FIN + binary, a 64-bit length, the payload.
            var left = Int(query) ?? 0
            let header: [UInt8] = [0x82, 127, 0, 0, 0, 0, 0, 0x10, 0, 0]
            chunk.replaceSubrange(0..<header.count, with: header)
            while left > 0 {
                let n = chunk.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, min($0.count, left), Int32(MSG_NOSIGNAL)) }
                if n <= 0 { return }
                left -= n
            }
        }
    }

    /// Reads until the end of a head (or of an ingress line and a head), a byte at a time.
    static func readHead(_ fd: Int32) -> String? {
        var bytes: [UInt8] = []
        var byte: UInt8 = 0
        while !bytes.suffix(4).elementsEqual([13, 10, 13, 10]) && bytes.count < 65536 {
            guard read(fd, &byte, 1) == 1 else { return nil }
            bytes.append(byte)
            if bytes.count == 15 && bytes.elementsEqual(Array("HANGAR-INGRESS ".utf8)) {
                while byte != 10 {
                    guard read(fd, &byte, 1) == 1 else { return nil }
                    bytes.append(byte)
                }
                return String(decoding: bytes, as: UTF8.self)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    static func write(_ fd: Int32, _ text: String) -> Bool {
        let bytes = Array(text.utf8)
        return bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) } == bytes.count
    }
}
