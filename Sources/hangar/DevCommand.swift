import ArgumentParser
import Glibc
import HangarController
import HangarCore
import HangarDrone
import HangarPolicy
import HangarProxy
import HangarSandbox
import HangarStore
import Hummingbird
import Logging
import NIOPosix
import NIOCore
import ServiceLifecycle
import UnixSignals

/// `hangar dev`: the whole system in one process on loopback: a controller (SQLite), a
/// drone and a proxy, their state under one directory.
struct DevCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dev",
        abstract: "Run a controller, a drone and a proxy in one process, on loopback, with their state in ./.hangar.",
        discussion: """
            The controller's API on --api, the proxy on --proxy; the cluster is named \
            localhost:PORT after the proxy's port, so backend URLs work from this machine. \
            Images and policies as for the drone (HANGAR_IMAGES, HANGAR_POLICIES). Ctrl-C stops \
            everything and every backend.
            """)

    @OptionGroup var log: LogOptions

    @Option(name: .customLong("state-dir"), help: ArgumentHelp("Where the state goes.", valueName: "dir"))
    var stateDirectory = ".hangar"

    @Option(help: ArgumentHelp("The controller's API address.", valueName: "host:port"))
    var api = "127.0.0.1:8080"

    @Option(help: ArgumentHelp("The proxy's address.", valueName: "host:port"))
    var proxy = "127.0.0.1:9090"

    @Option(help: ArgumentHelp("At most this many backends at once.", valueName: "n"))
    var maxBackends = 20

    func validate() throws {
        for (option, value) in [("--api", api), ("--proxy", proxy)] {
            let (_, port) = try parseAddress(value, option: option)
            if port == 0 { throw ValidationError("\(option) needs a fixed port (the other roles are told it), got 0") }
        }
        // Checked before anything starts (the sandbox runtime sweeps its cgroups at start).
        if IPv4Endpoint(proxy) == nil {
            throw ValidationError("--proxy: an IPv4 address and port to listen on, got \"\(proxy.prefix(64))\"")
        }
        if maxBackends < 1 { throw ValidationError("--max-backends must be at least 1, got \(maxBackends)") }
    }

    func run() async throws {
        log.bootstrap()
        NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor()
        let (apiHost, apiPort) = try parseAddress(api, option: "--api")
        let (proxyHost, proxyPort) = try parseAddress(proxy, option: "--proxy")
        let directory = try await commandLineErrors { () throws -> String in
            try makeDirectories(stateDirectory)
            guard let resolved = realpath(stateDirectory, nil) else {
                throw ValidationError("--state-dir \(stateDirectory): \(String(cString: strerror(errno)))")
            }
            defer { free(resolved) }
            return String(cString: resolved)
        }
        let logger = Logger(label: "hangar.dev")
        let droneLogger = Logger(label: "hangar.drone")
        let cluster = try ClusterName("localhost:\(proxyPort)")
        let apiURL = "http://\(apiHost):\(apiPort)"
        let secret = Array((randomHex16() + randomHex16() + randomHex16()).utf8)

        var controllerSettings = ControllerConfiguration(defaultCluster: cluster, publicURL: apiURL)
        controllerSettings.policies = PolicyLoader.fromEnvironment()
        let store: SQLiteStore
        do {
            store = try SQLiteStore(path: directory + "/controller.sqlite")
        } catch {
            FileHandleStandardError.write("hangar: the store in \(directory): \(error)\n")
            throw ExitCode(1)
        }
        let controller = Controller(configuration: controllerSettings, store: store, logger: Logger(label: "hangar.controller"))

        var droneSettings = DroneConfiguration()
        droneSettings.maxBackends = maxBackends
        droneSettings.logDirectory = directory + "/logs"
        droneSettings.dataRoot = directory + "/data"
        let (drone, runtime) = try await makeDrone(droneSettings, state: directory + "/drone.sqlite", logger: droneLogger)
        defer { runtime.finish() }
        let ingress: IngressListener
        let entry: Proxy
        do {
            ingress = try IngressListener(drone: drone, secret: secret, port: 0, logger: droneLogger)
            var proxySettings = ProxyConfiguration(cluster: cluster, ingressSecret: secret)
            proxySettings.address = proxyHost
            proxySettings.port = UInt16(proxyPort)
            proxySettings.loops = min(4, System.coreCount)
            entry = try Proxy(
                configuration: proxySettings, link: RouteLinkConfiguration(url: apiURL, cluster: cluster), logger: Logger(label: "hangar.proxy"))
        } catch {
            FileHandleStandardError.write("hangar: \(error)\n")
            throw ExitCode(1)
        }
        defer { ingress.close() }
        var linkSettings = ControllerLinkConfiguration(url: apiURL, cluster: cluster, name: try DroneName("dev"))
        linkSettings.ingress = "127.0.0.1:\(ingress.port)"
        let link = ControllerLink(drone: drone, configuration: linkSettings, logger: droneLogger)

        let me = CommandLine.arguments.first ?? "hangar"
        let banner = Self.banner(hangar: me, api: apiURL, cluster: cluster, directory: stateDirectory)
        // One scrape for the three roles: the controller's /metrics ends with the drone's and the proxy's.
        let app = controller.application(
            host: apiHost, port: apiPort,
            onRunning: { _ in _ = banner.utf8CString.withUnsafeBufferPointer { write(1, $0.baseAddress, $0.count - 1) } },
            moreMetrics: { drone.metrics() + entry.renderMetrics() })
        try await runUntilSignalled([app, ControllerSweeps(controller), DroneLinkService(link: link), entry], logger: logger)
        for backend in drone.running { backend.terminate(.external) }
        for backend in drone.allBackends { _ = await backend.terminated() }
    }

    static func banner(hangar: String, api: String, cluster: ClusterName, directory: String) -> String {
        """
        hangar dev: controller \(api), proxy http://\(cluster) (cluster \(cluster)), state in \(directory)
        From another shell (Ctrl-C here stops everything):
          \(hangar) connect doc-1 --image collab                                 # a backend (examples/collab); its URL once ready
          \(hangar) ws "$(\(hangar) connect doc-1)ws"                            # a WebSocket session to it, through the proxy
          \(hangar) cluster --watch 2                                             # drones, load, backends, live
          curl -s http://\(cluster)/ready                                       # the proxy is connected
          curl -s \(api)/metrics                                          # the three roles' metrics


        """
    }
}

/// The drone's link to the controller as a Service (it ends on shutdown).
struct DroneLinkService: Service {
    let link: ControllerLink

    func run() async throws {
        await cancelWhenGracefulShutdown { await link.run() }
    }
}
