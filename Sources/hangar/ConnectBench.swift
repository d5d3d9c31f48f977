import ArgumentParser
import FoundationEssentials
import Glibc
import HangarClient
import HangarController
import HangarCore
import HangarPolicy
import HangarSandbox
import HangarStore
import HTTPTypes
import Hummingbird
import HummingbirdWSClient
import Logging
import NIOCore
import NIOPosix

/// `hangar bench connect`: connects per second and their latency through the controller's
/// HTTP API with its SQLite store (a file in WAL mode), for keys that have a backend and for
/// new keys (each scheduled on a drone: a new backend row, key lease, spawn action and
/// token). The load comes from wrk over loopback with keep-alive connections; the drone is
/// a protocol peer that acknowledges spawn actions without spawning, so that what is
/// measured is the controller.
struct ConnectBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "connect", abstract: "Connects per second and latency of the controller (existing and new keys).")

    @Option(help: "Seconds of load per case.") var seconds = 10
    @Option(help: "Concurrent keep-alive connections.") var connections = 64
    @Option(help: "wrk threads.") var threads = 2
    @Option(help: "Keys that have a backend, for the existing-key case.") var keys = 1000
    @Flag(help: "Print only the JSON line.") var json = false

    func validate() throws {
        if !(1...3600).contains(seconds) { throw ValidationError("--seconds must be 1...3600, got \(seconds)") }
        if !(1...10_000).contains(connections) { throw ValidationError("--connections must be 1...10000, got \(connections)") }
        if !(1...connections).contains(threads) {
            throw ValidationError("--threads must be 1...--connections (\(connections)), got \(threads)")
        }
        if !(1...1_000_000).contains(keys) { throw ValidationError("--keys must be 1...1000000, got \(keys)") }
    }

    struct Result {
        var name: String
        var requests: Int
        var perSecond: Double
        var p50: Double
        var p90: Double
        var p99: Double
        var errors: Int
    }

    func run() async throws {
        // As `hangar controller` runs: request handlers on the event loops (wrk runs on
        // a thread of its own).
        NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor()
        guard let wrk = findExecutable("wrk") else {
            throw BenchError("wrk is not installed (scripts/install-deps.sh installs it)")
        }
        let directory = try makeTemporaryDirectory(prefix: "hangar-bench-connect")
        defer { try? spawnAndWait(["/bin/rm", "-rf", directory], stdio: 2) }
        let token = randomToken()
        var configuration = ControllerConfiguration(defaultCluster: try ClusterName("bench.local:9090"))
        configuration.token = token
        configuration.policies = PolicyLoader.fromEnvironment()
        var logger = Logger(label: "hangar.bench")
        logger.logLevel = .warning
        let store = try SQLiteStore(path: directory + "/controller.sqlite")
        let controller = Controller(configuration: configuration, store: store, logger: logger)
        let (portStream, portContinuation) = AsyncStream<Int>.makeStream()
        let app = controller.application(host: "127.0.0.1", port: 0) { port in portContinuation.yield(port) }
        let server = Task { try await app.runService() }
        defer { server.cancel() }
        var ports = portStream.makeAsyncIterator()
        guard let port = await ports.next() else { throw BenchError("the controller did not start") }
        let url = "http://127.0.0.1:\(port)"
        let peer = Task { try await Self.acknowledgingDrone(url: url, token: token, logger: logger) }
        defer { peer.cancel() }
        let client = HangarClient(url: url, token: token)
        try await Self.waitForDrone(client)

        // The existing keys get their backends first.
        let body: @Sendable (String) -> String = { key in
            #"{"key":{"name":"\#(key)"},"spawn_config":{"executable":{"image":"busybox"}}}"#
        }
        for start in stride(from: 0, to: keys, by: 100) {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for index in start..<min(keys, start + 100) {
                    group.addTask {
                        _ = try await client.connect(try JSONDecoder().decode(ConnectRequest.self, from: Data(body("key-\(index)").utf8)))
                    }
                }
                try await group.waitForAll()
            }
        }

        // The requests are made once, before the clock starts: wrk shares the two cores
        // with the controller, and formatting each request in Lua would take from them.
        let existing = """
            wrk.method = "POST"
            wrk.headers["Content-Type"] = "application/json"
            wrk.headers["Authorization"] = "Bearer \(token)"
            local requests = {}
            for index = 0, \(keys) - 1 do
              requests[index + 1] = wrk.format(nil, "/ctrl/connect", nil, '\(body("key-' .. index .. '"))')
            end
            request = function() return requests[math.random(1, #requests)] end
            """
        let fresh = """
            local counter = 0
            wrk.method = "POST"
            wrk.headers["Content-Type"] = "application/json"
            wrk.headers["Authorization"] = "Bearer \(token)"
            function setup(thread) thread:set("prefix", "new-" .. tostring(math.random(1, 1000000000)) .. "-") end
            request = function()
              counter = counter + 1
              return wrk.format(nil, "/ctrl/connect", nil, '\(body("' .. prefix .. counter .. '"))')
            end
            """
        // The floor: the same server, authentication and JSON answer with no body to
        // decode and no store; what a connect could reach on this machine in this run.
        let floor = """
            wrk.headers["Authorization"] = "Bearer \(token)"
            """
        var results: [Result] = []
        let cases = [
            ("API floor: GET status", floor, "/ctrl/status"), ("existing keys", existing, "/ctrl/connect"),
            ("new keys (scheduled)", fresh, "/ctrl/connect"),
        ]
        for (name, script, route) in cases {
            let path = directory + "/load.lua"
            try writeFile(path, script)
            let arguments = [
                wrk, "-t\(threads)", "-c\(connections)", "-d\(seconds)s", "--latency", "-s", path, url + route,
            ]
            // wrk blocks for the whole run: not on one of the few threads the controller runs on.
            let output = try await BlockingPool.shared.run { () throws(BenchError) -> String in
                try runCapturing(arguments, output: directory + "/wrk.out")
            }
            results.append(try Self.parse(output, name: name))
        }
        let rows = results.map { result in
            "{\"name\": \"\(result.name)\", \"requests\": \(result.requests), \"per_second\": \(Int(result.perSecond)), "
                + "\"p50_ms\": \(result.p50), \"p90_ms\": \(result.p90), \"p99_ms\": \(result.p99), \"errors\": \(result.errors)}"
        }
        let line =
            "{\"benchmark\": \"connect\", \"store\": \"sqlite\", \"connections\": \(connections), \"seconds\": \(seconds), \"results\": [\(rows.joined(separator: ", "))]}"
        if !json {
            print("connects through the controller's API (SQLite, WAL), \(connections) connections, \(seconds) s each")
            print("case".padding(24) + "connects/s".padding(12) + "p50 ms".padding(9) + "p90 ms".padding(9) + "p99 ms".padding(9) + "errors")
            for result in results {
                print(
                    result.name.padding(24) + "\(Int(result.perSecond))".padding(12) + "\(result.p50)".padding(9)
                        + "\(result.p90)".padding(9) + "\(result.p99)".padding(9) + "\(result.errors)")
            }
        }
        print(line)
    }

    /// A drone that takes every spawn action and acknowledges it, without spawning.
    static func acknowledgingDrone(url: String, token: String, logger: Logger) async throws {
        var settings = WebSocketClientConfiguration(maxFrameSize: 1 << 20)
        settings.additionalHeaders[.authorization] = "Bearer \(token)"
        let socket = controllerSocketURL(url, cluster: try ClusterName("bench.local:9090"), socket: "drone-socket")
        try await WebSocketClient.connect(url: socket, configuration: settings, logger: logger) { inbound, outbound, _ in
            func send(_ message: DroneMessage) async throws {
                try await outbound.write(.text(String(decoding: try JSONEncoder().encode(message), as: UTF8.self)))
            }
            try await send(
                .hello(
                    DroneHello(
                        drone: try DroneName("bench-drone"), pool: .default, capacityBackends: 10_000_000,
                        capacityMemory: 0, ingress: nil)))
            let beats = Task {
                var seq: Int64 = 0
                while !Task.isCancelled {
                    seq += 1
                    try await send(.heartbeat(DroneHeartbeat(seq: seq, running: 0)))
                    try await Task.sleep(for: .seconds(1))
                }
            }
            defer { beats.cancel() }
            for try await message in inbound.messages(maxSize: 1 << 20) {
                guard case .text(let text) = message,
                    case .action(let order) = try JSONDecoder().decode(DroneMessage.self, from: Data(text.utf8))
                else { continue }
                try await send(.actionAck(ActionAck(id: order.id)))
            }
        }
    }

    static func waitForDrone(_ client: HangarClient) async throws {
        for _ in 0..<200 {
            if let state = try? await client.clusterState(try ClusterName("bench.local:9090")),
                state.drones.contains(where: \.connected)
            {
                return
            }
            try await Task.sleep(for: .milliseconds(25))
        }
        throw BenchError("the bench drone did not connect")
    }

    /// wrk's summary: requests, requests/s, latency percentiles, non-2xx answers.
    static func parse(_ output: String, name: String) throws -> Result {
        func milliseconds(_ percentile: String) -> Double {
            guard let line = output.split(separator: "\n").first(where: { $0.drop { $0 == " " }.hasPrefix(percentile + "%") })
            else { return -1 }
            let value = line.split(separator: " ").last.map(String.init) ?? ""
            let number = Double(value.filter { "0123456789.".contains($0) }) ?? -1
            if value.hasSuffix("us") { return (number / 1000 * 1000).rounded() / 1000 }
            if value.hasSuffix("ms") { return number }
            if value.hasSuffix("s") { return number * 1000 }
            return number
        }
        guard let rate = output.firstMatch(of: /Requests\/sec:\s+([0-9.]+)/), let total = output.firstMatch(of: /(\d+) requests in/)
        else { throw BenchError("wrk printed no summary:\n\(output)") }
        let errors = output.firstMatch(of: /Non-2xx or 3xx responses: (\d+)/).flatMap { Int($0.1) } ?? 0
        return Result(
            name: name, requests: Int(total.1) ?? 0, perSecond: Double(rate.1) ?? 0, p50: milliseconds("50"),
            p90: milliseconds("90"), p99: milliseconds("99"), errors: errors)
    }
}

func writeFile(_ path: String, _ text: String) throws(BenchError) {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
    guard fd >= 0 else { throw BenchError("open \(path): errno \(errno)") }
    defer { close(fd) }
    var text = text
    let written = text.withUTF8 { write(fd, $0.baseAddress, $0.count) }
    guard written == text.utf8.count else { throw BenchError("writing \(path): errno \(errno)") }
}

/// Runs a program to its end with its stdout in the file `output`; what it printed.
func runCapturing(_ arguments: [String], output: String) throws(BenchError) -> String {
    let fd = open(output, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
    guard fd >= 0 else { throw BenchError("open \(output): errno \(errno)") }
    let status = try spawnAndWait(arguments, stdio: [nil, fd, nil])
    close(fd)
    guard status == 0 else { throw BenchError("\(arguments[0]) ended with status \(status)") }
    do {
        return String(decoding: try readWholeFile(output), as: UTF8.self)
    } catch {
        throw BenchError("reading \(output): \(error)")
    }
}
