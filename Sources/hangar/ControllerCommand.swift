import ArgumentParser
import Glibc
import HangarController
import HangarCore
import HangarPolicy
import HangarSandbox
import HangarStore
import Hummingbird
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import UnixSignals

/// `hangar controller`: the API, the store, scheduling, and the drones' and proxies' sockets.
struct ControllerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "controller",
        abstract: "Run the controller: the HTTP API (docs/API.md), its store, and the drones' socket.",
        discussion: """
            /ctrl needs `Authorization: Bearer $HANGAR_CONTROLLER_TOKEN` (at least 16 bytes) when that \\
            variable is set, or a 2xx from --forward-auth; drones connect with the same token. \\
            Without either, /ctrl is open: listen on loopback only.
            """)

    @OptionGroup var log: LogOptions

    @Option(help: ArgumentHelp("Listen on this address and port (port 0: any free one).", valueName: "host:port"))
    var listen = "127.0.0.1:8080"

    @Option(help: ArgumentHelp("The store: a SQLite file (:memory: for none).", valueName: "path"))
    var store = "/var/lib/hangar/controller.sqlite"

    @Option(help: ArgumentHelp("Connects that name no cluster go here (the proxies' public address).", valueName: "name"))
    var cluster = "localhost:9090"

    @Option(help: ArgumentHelp("Where clients reach this controller (for status URLs).", valueName: "url"))
    var publicURL: String?

    @Option(help: ArgumentHelp("Ask this URL to authorize /ctrl requests (Plane's forward auth).", valueName: "url"))
    var forwardAuth: String?

    @Option(help: ArgumentHelp("A renewal holds a drone's keys this long.", valueName: "seconds"))
    var lease = 30

    @Option(help: ArgumentHelp("Drones send a heartbeat this often.", valueName: "milliseconds"))
    var heartbeat = 2000

    @Option(help: ArgumentHelp("A drone silent this long gets no new backends.", valueName: "milliseconds"))
    var heartbeatFreshness = 6000

    @Option(help: ArgumentHelp("A drone silent this long has lost its backends (at least the lease).", valueName: "seconds"))
    var lostAfter: Int?

    @Option(help: ArgumentHelp("Connection tokens resolve this long.", valueName: "seconds"))
    var tokenLifetime = 3600

    @Option(help: ArgumentHelp("Image policies to check connects against (none: the drones check).", valueName: "dir"))
    var policies: String?

    func run() async throws {
        log.bootstrap()
        // Request handlers run on the event loops that do the I/O: no hop between NIO's
        // threads and Swift's global pool per request (nothing here blocks a thread).
        NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor()
        let (host, port) = try parseAddress(listen, option: "--listen")
        let token = getenv("HANGAR_CONTROLLER_TOKEN").map { String(cString: $0) }
        var configuration = ControllerConfiguration(
            defaultCluster: try await commandLineErrors { try ClusterName(cluster) },
            publicURL: publicURL)
        configuration.token = token
        configuration.forwardAuth = forwardAuth
        configuration.leaseSeconds = lease
        configuration.heartbeatInterval = .milliseconds(heartbeat)
        configuration.heartbeatFreshness = .milliseconds(heartbeatFreshness)
        configuration.lostAfter = .seconds(lostAfter ?? lease)
        configuration.tokenLifetime = .seconds(tokenLifetime)
        configuration.policies =
            policies == "none" ? nil : policies.map(PolicyLoader.init(directory:)) ?? PolicyLoader.fromEnvironment()
        do {
            try configuration.validate()
        } catch {
            throw ValidationError(error.message)
        }
        let logger = Logger(label: "hangar.controller")
        let database: SQLiteStore
        do {
            if store != ":memory:" { try? makeParentDirectory(of: store) }
            database = try SQLiteStore(path: store)
        } catch {
            FileHandleStandardError.write("hangar: the store \(store): \(error)\n")
            throw ExitCode(1)
        }
        let controller = Controller(configuration: configuration, store: database, logger: logger)
        let shownHost = host
        let shownCluster = configuration.defaultCluster
        let app = controller.application(host: host, port: port) { bound in
            let line = "hangar controller: listening on http://\(shownHost):\(bound) (cluster \(shownCluster))\n"
            _ = line.utf8CString.withUnsafeBufferPointer { write(1, $0.baseAddress, $0.count - 1) }
        }
        try await runUntilSignalled([app, ControllerSweeps(controller)], logger: logger)
    }
}

/// Runs a role's services until SIGTERM or SIGINT, with a bounded shutdown: what has not
/// drained 10 s after the signal (a client that keeps a stream open) is cancelled, and 5 s
/// later the group ends anyway.
func runUntilSignalled(_ services: [any Service], logger: Logger) async throws {
    var configuration = ServiceGroupConfiguration(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
    configuration.maximumGracefulShutdownDuration = .seconds(10)
    configuration.maximumCancellationDuration = .seconds(5)
    try await ServiceGroup(configuration: configuration).run()
}

/// HANGAR_CONTROLLER_TOKEN as a drone or a proxy sends it: unset, or at least 16 bytes
/// (what the controller accepts), checked before the role starts.
func checkControllerToken() throws {
    if let token = getenv("HANGAR_CONTROLLER_TOKEN"), strlen(token) < 16 {
        throw ValidationError("HANGAR_CONTROLLER_TOKEN: at least 16 bytes (the controller's token), got \(strlen(token))")
    }
}

/// "host:port" split, or a clear error naming the option.
func parseAddress(_ text: String, option: String) throws -> (String, Int) {
    guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), (0...65535).contains(port),
        colon != text.startIndex
    else {
        throw ValidationError("\(option) takes host:port (e.g. 127.0.0.1:8080), got \"\(text)\"")
    }
    return (String(text[..<colon]), port)
}
