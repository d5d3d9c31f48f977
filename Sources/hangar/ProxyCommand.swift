import ArgumentParser
import Glibc
import HangarCore
import HangarProxy
import Logging
import NIOPosix
import NIOCore
import ServiceLifecycle
import UnixSignals

/// `hangar proxy`: the public entry of a cluster.
struct ProxyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "proxy",
        abstract: "Carry HTTP and WebSocket traffic to backends, routed by the token in each request's path.",
        discussion: """
            Routes come from the controller (--controller; its token: HANGAR_CONTROLLER_TOKEN); \
            bytes go to the drones' ingress ports, each connection opened with a preface signed \
            with HANGAR_INGRESS_SECRET (the drones' secret, at least 16 bytes). A request's Host \
            must be the cluster's name or a subdomain of it. GET /ready answers 200 while the \
            controller is connected.
            """)

    @OptionGroup var log: LogOptions

    @Option(help: ArgumentHelp("The controller's URL.", valueName: "url"))
    var controller = "http://127.0.0.1:8080"

    @Option(help: ArgumentHelp("The cluster it serves: its public host[:port].", valueName: "name"))
    var cluster = "localhost:9090"

    @Option(help: ArgumentHelp("Listen on this IPv4 address and port (port 0: any free one).", valueName: "host:port"))
    var listen = "127.0.0.1:9090"

    @Option(help: ArgumentHelp("Event loops (threads); default: one per core.", valueName: "n"))
    var loops: Int?

    @Option(help: ArgumentHelp("Redirect GET / here (default: 400).", valueName: "url"))
    var rootRedirect: String?

    @Option(help: ArgumentHelp("How long a request waits for its backend to be ready.", valueName: "seconds"))
    var readyTimeout = 30

    @Option(help: ArgumentHelp("A request head must arrive within this after its first byte (else 408).", valueName: "seconds"))
    var headTimeout = 10

    @Option(help: ArgumentHelp("x-forwarded-proto when the client sets none (https behind a TLS terminator).", valueName: "scheme"))
    var scheme = "http"

    @Option(help: ArgumentHelp("Serve GET /metrics (Prometheus) on this address (default: none).", valueName: "host:port"))
    var metrics: String?

    func validate() throws {
        guard isHTTPURL(controller) else {
            throw ValidationError("--controller takes an http:// or https:// URL, got \"\(controller.prefix(64))\"")
        }
        if (try? ClusterName(cluster)) == nil { throw ValidationError("--cluster: not a cluster name: \"\(cluster.prefix(64))\"") }
        _ = try parseAddress(listen, option: "--listen")
        if let metrics { _ = try parseAddress(metrics, option: "--metrics") }
        if let loops, !(1...64).contains(loops) { throw ValidationError("--loops: from 1 to 64, got \(loops)") }
        if !(1...3600).contains(headTimeout) { throw ValidationError("--head-timeout: from 1 to 3600 seconds, got \(headTimeout)") }
        if !(1...3600).contains(readyTimeout) { throw ValidationError("--ready-timeout: from 1 to 3600 seconds, got \(readyTimeout)") }
        // The rest of the settings' rules (scheme, root redirect) before the secret's.
        _ = try settings(secret: [UInt8](repeating: 0, count: 16))
        try checkControllerToken()
        if (getenv("HANGAR_INGRESS_SECRET").map { strlen($0) } ?? 0) < 16 {
            throw ValidationError("the proxy needs HANGAR_INGRESS_SECRET (the drones' ingress secret, at least 16 bytes)")
        }
    }

    /// The proxy's settings from the flags, checked, with `secret` for the ingress.
    func settings(secret: [UInt8]) throws -> ProxyConfiguration {
        let (host, port) = try parseAddress(listen, option: "--listen")
        var configuration = ProxyConfiguration(cluster: try ClusterName(cluster), ingressSecret: secret)
        configuration.address = host
        configuration.port = UInt16(port)
        configuration.loops = loops ?? min(64, System.coreCount)
        configuration.rootRedirect = rootRedirect
        configuration.readyTimeout = .seconds(readyTimeout)
        configuration.headTimeout = .seconds(headTimeout)
        configuration.scheme = scheme
        do {
            try configuration.validate()
        } catch {
            throw ValidationError(error.description)
        }
        return configuration
    }

    func run() async throws {
        log.bootstrap()
        let configuration = try settings(secret: Array(String(cString: getenv("HANGAR_INGRESS_SECRET")).utf8))
        let host = configuration.address
        var link = RouteLinkConfiguration(url: controller, cluster: try ClusterName(cluster))
        link.token = getenv("HANGAR_CONTROLLER_TOKEN").map { String(cString: $0) }
        let logger = Logger(label: "hangar.proxy")
        let proxy: Proxy
        do {
            proxy = try Proxy(configuration: configuration, link: link, logger: logger)
        } catch {
            throw ValidationError(error.description)
        }
        let line = "hangar proxy: listening on http://\(host):\(proxy.port) (cluster \(cluster)), controller \(controller)\n"
        _ = line.utf8CString.withUnsafeBufferPointer { write(1, $0.baseAddress, $0.count - 1) }
        try await runUntilSignalled(
            [proxy] + metricsListener(metrics, option: "--metrics", logger: logger) { proxy.renderMetrics() }, logger: logger)
    }
}
