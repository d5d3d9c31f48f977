import ArgumentParser
import Glibc
import HangarCore
import HangarDrone
import HangarPolicy
import HangarSandbox
import Hummingbird
import Logging
import ServiceLifecycle
import UnixSignals

/// `hangar drone`: runs backends on this host (`run`, the default), and talks to a running
/// drone (`logs`).
struct DroneCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "drone", abstract: "Run backends on this host, or talk to a running drone.",
        subcommands: [DroneRun.self, DroneLogs.self], defaultSubcommand: DroneRun.self)
}

/// `hangar drone [run]`: runs backends on this host, commanded through its admin API.
struct DroneRun: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run backends on this host; commands come through the admin API on a unix socket.",
        discussion: """
            The admin API (HTTP on --socket): POST /backends, GET /backends, GET /backends/ID, \\
            POST /backends/ID/terminate, GET /backends/ID/logs, GET /events, POST /events/ack, \\
            GET /metrics (docs/API.md). With --ingress-port, \\
            proxies on other hosts reach backends through one TCP port, each connection opened by \\
            a preface signed with HANGAR_INGRESS_SECRET (at least 16 bytes).
            """)

    @OptionGroup var log: LogOptions

    @Option(help: ArgumentHelp("The admin API's unix socket.", valueName: "path"))
    var socket = "/run/hangar/drone.sock"

    @Option(help: ArgumentHelp("Listen for proxies on this TCP port (0: any free port).", valueName: "port"))
    var ingressPort: UInt16?

    @Option(help: ArgumentHelp("The ingress port's address.", valueName: "ipv4"))
    var ingressAddress = "127.0.0.1"

    @Option(help: ArgumentHelp("At most this many backends at once.", valueName: "n"))
    var maxBackends = 100

    @Option(help: ArgumentHelp("Backends' memory limits may add up to at most this.", valueName: "size"))
    var memoryBudget: String?

    @Option(help: ArgumentHelp("Where backends' logs go (none: memory only).", valueName: "dir"))
    var logDirectory = "/var/log/hangar"

    @Option(help: ArgumentHelp("The drone's state (SQLite; :memory: for none).", valueName: "path"))
    var state = "/var/lib/hangar/drone.sqlite"

    @Option(
        help: ArgumentHelp(
            "Per-key data directories, for policies with filesystem.data_dir (none: such policies are refused).",
            valueName: "dir"))
    var dataRoot = "/var/lib/hangar/data"

    @Option(help: ArgumentHelp("Take orders from this controller (its token: HANGAR_CONTROLLER_TOKEN).", valueName: "url"))
    var controller: String?

    @Option(help: ArgumentHelp("This drone's name (default: the hostname).", valueName: "name"))
    var name: String?

    @Option(help: ArgumentHelp("The cluster it serves.", valueName: "name"))
    var cluster = "localhost:9090"

    @Option(help: ArgumentHelp("Its pool within the cluster (default: the default pool).", valueName: "name"))
    var pool = ""

    @Option(help: ArgumentHelp("Serve GET /metrics (Prometheus) on this address too (default: the admin socket only).", valueName: "host:port"))
    var metrics: String?

    func validate() throws {
        if let controller, !isHTTPURL(controller) {
            throw ValidationError("--controller takes an http:// or https:// URL, got \"\(controller)\"")
        }
        if controller != nil { try checkControllerToken() }
        for (option, value) in [("--name", name), ("--cluster", cluster), ("--pool", pool.isEmpty ? nil : pool)] {
            guard let value else { continue }
            do {
                _ = try DroneName(value)
            } catch {
                throw ValidationError("\(option): \(error)")
            }
        }
        if maxBackends < 1 { throw ValidationError("--max-backends must be at least 1, got \(maxBackends)") }
        if let metrics { _ = try parseAddress(metrics, option: "--metrics") }
        if dataRoot != "none" && !dataRoot.hasPrefix("/") {
            throw ValidationError("--data-root must be an absolute path or none, got \"\(dataRoot)\"")
        }
        if ingressPort != nil && (getenv("HANGAR_INGRESS_SECRET").map { strlen($0) } ?? 0) < 16 {
            throw ValidationError("--ingress-port needs HANGAR_INGRESS_SECRET of at least 16 bytes")
        }
    }

    func run() async throws {
        log.bootstrap()
        var configuration = DroneConfiguration()
        configuration.maxBackends = maxBackends
        configuration.memoryBudget = try await commandLineErrors { try memoryBudget.map { try ByteSize(parsing: $0) } }
        configuration.logDirectory = logDirectory == "none" ? nil : logDirectory
        configuration.dataRoot = dataRoot == "none" ? nil : dataRoot
        let logger = Logger(label: "hangar.drone")
        let (drone, runtime) = try await makeDrone(configuration, state: state, logger: logger)
        defer { runtime.finish() }
        var ingress: IngressListener?
        if let ingressPort {
            let secret = getenv("HANGAR_INGRESS_SECRET").map { Array(String(cString: $0).utf8) } ?? []
            do {
                ingress = try IngressListener(
                    drone: drone, secret: secret, address: ingressAddress, port: ingressPort, logger: logger)
            } catch {
                FileHandleStandardError.write("hangar: \(error)\n")
                throw ExitCode(1)
            }
        }
        defer { ingress?.close() }
        let banner =
            "hangar drone: admin API on unix:\(socket)" + (ingress.map { ", ingress on \(ingressAddress):\($0.port)" } ?? "")
            + (controller.map { ", controller \($0)" } ?? "") + "\n"
        try? makeParentDirectory(of: socket)
        unlink(socket)  // a socket left by an earlier drone
        var link: ControllerLink?
        if let controller {
            var settings = ControllerLinkConfiguration(
                url: controller, cluster: try ClusterName(cluster), name: try DroneName(name ?? hostname()))
            settings.pool = try PoolName(pool)
            settings.token = getenv("HANGAR_CONTROLLER_TOKEN").map { String(cString: $0) }
            settings.ingress = ingress.map { "\(ingressAddress):\($0.port)" }
            link = ControllerLink(drone: drone, configuration: settings, logger: logger)
        }
        let linkTask = link.map { link in Task { await link.run() } }
        defer { linkTask?.cancel() }
        let app = Application(
            router: AdminAPI.router(for: drone),
            configuration: .init(address: .unixDomainSocket(path: socket), serverName: "hangar-drone"),
            onServerRunning: { _ in
                // The admin API has no authentication: only root may connect.
                chmod(socket, 0o600)
                _ = banner.utf8CString.withUnsafeBufferPointer { write(1, $0.baseAddress, $0.count - 1) }
            },
            logger: logger)
        try await runUntilSignalled(
            [app] + metricsListener(metrics, option: "--metrics", logger: logger) { drone.metrics() }, logger: logger)
        for backend in drone.running { backend.terminate(.external) }
        for backend in drone.allBackends { _ = await backend.terminated() }
    }
}

/// A drone on this host with its sandbox runtime (the caller finishes it), its state in
/// `state`, the previous run's backends recovered (recorded as lost).
func makeDrone(_ configuration: DroneConfiguration, state: String, logger: Logger) async throws -> (Drone, SandboxRuntime) {
    let runtime = try await commandLineErrors {
        try SandboxRuntime(configuration: .fromEnvironment(), logger: logger)
    }
    do {
        let store = try DroneStore(path: state)
        let drone = try Drone(
            runtime: runtime, policies: PolicyLoader.fromEnvironment(), images: ImageStore.fromEnvironment(),
            host: .fromEnvironment(), configuration: configuration, store: store, logger: logger)
        let lost = try drone.recover()
        if !lost.isEmpty {
            logger.notice("backends of the previous run recorded as lost", metadata: ["backends.count": "\(lost.count)"])
        }
        return (drone, runtime)
    } catch {
        runtime.finish()
        FileHandleStandardError.write("hangar: \(error)\n")
        throw ExitCode(1)
    }
}

/// The host's name (the drone's default name), lowercased.
func hostname() -> String {
    var buffer = [CChar](repeating: 0, count: 256)
    gethostname(&buffer, buffer.count - 1)
    return String(cString: buffer).lowercased()
}

/// `hangar drone logs BACKEND [--follow]`: a backend's stdout and stderr, from a running drone.
struct DroneLogs: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "logs", abstract: "Print a backend's output (what the drone keeps in memory); --follow goes on.")

    @Argument(help: ArgumentHelp("The backend's id.", valueName: "backend"))
    var backend: String

    @Flag(name: .shortAndLong, help: "Keep printing new output until the backend ends.")
    var follow = false

    @Option(help: ArgumentHelp("The drone's admin socket.", valueName: "path"))
    var socket = "/run/hangar/drone.sock"

    func validate() throws {
        guard (try? BackendID(backend)) != nil else {
            throw ValidationError("a backend id looks like bk-0123456789abcdef, got \"\(backend)\"")
        }
    }

    func run() async throws {
        var offset = 0
        while true {
            let reply: AdminClient.Reply
            do {
                reply = try AdminClient(socket: socket).get("/backends/\(backend)/logs?since=\(offset)")
            } catch {
                FileHandleStandardError.write("hangar: \(error)\n")
                throw ExitCode(1)
            }
            guard reply.status == 200 else {
                FileHandleStandardError.write("hangar: \(reply.status): \(String(decoding: reply.body, as: UTF8.self))\n")
                throw ExitCode(1)
            }
            _ = reply.body.withUnsafeBytes { write(1, $0.baseAddress, $0.count) }
            offset = Int(reply.headers["x-hangar-log-offset"] ?? "") ?? offset
            guard follow else { return }
            let status = try AdminClient(socket: socket).get("/backends/\(backend)")
            if String(decoding: status.body, as: UTF8.self).contains(#""status":"terminated""#) {
                let last = try AdminClient(socket: socket).get("/backends/\(backend)/logs?since=\(offset)")
                _ = last.body.withUnsafeBytes { write(1, $0.baseAddress, $0.count) }
                return
            }
            try await Task.sleep(for: .milliseconds(250))
        }
    }
}
