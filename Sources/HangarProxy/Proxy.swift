import CShims
import Glibc
import HangarCore
import Logging
import ServiceLifecycle
import Synchronization

/// The public entry: HTTP and WebSocket traffic to the backend each request's token names.
/// A listener shared by `loops` epoll loops (each on its own thread), routes from the
/// controller through a `RouteLink`, bytes moved with splice. Runs as a Service: on
/// shutdown it stops accepting and closes its connections.
public final class Proxy: Service {
    public let configuration: ProxyConfiguration
    /// Routes by token; `isConnected` is `GET /ready`.
    public let routes: RouteCache
    public let link: RouteLink
    /// The port it listens on (useful when asked for port 0).
    public let port: UInt16
    let core: ProxyCore
    let loops: [PumpLoop]
    let listener: Int32
    let logger: Logger

    /// Listens at once (so that `port` is known); carries nothing until `run`.
    public init(configuration: ProxyConfiguration, link linkConfiguration: RouteLinkConfiguration, logger: Logger)
        throws(ProxyError)
    {
        try configuration.validate()
        self.configuration = configuration
        self.logger = logger
        let routes = RouteCache()
        self.routes = routes
        let core = ProxyCore(configuration: configuration, routes: routes, logger: logger)
        self.core = core
        var bound: UInt16 = 0
        let listener = hg_listen_tcp4(configuration.address, configuration.port, 4096, 1, &bound)
        guard listener >= 0 else {
            throw ProxyError(
                "listening on \(configuration.address):\(configuration.port): \(String(cString: strerror(-listener)))")
        }
        self.listener = listener
        port = bound
        var loops: [PumpLoop] = []
        do {
            for _ in 0..<configuration.loops { loops.append(try PumpLoop(core: core, listener: listener)) }
        } catch {
            Glibc.close(listener)
            throw error
        }
        for loop in loops { loop.peers = loops.map(PumpLoop.Peer.init) }
        self.loops = loops
        let everyLoop = loops
        link = RouteLink(configuration: linkConfiguration, cache: routes, logger: logger) { revocation in
            // Connections of a revoked token, grant or ended backend end at once.
            for loop in everyLoop {
                loop.post {
                    for relay in Array(loop.relays.values) { relay.revoke(revocation) }
                }
            }
        }
    }

    /// The loops' thread ids (for their CPU time in /proc/self/task).
    public var loopThreadIDs: [Int32] { loops.map { $0.threadID.load(ordering: .relaxed) } }

    /// The counters, for /metrics and tests.
    public var metrics: ProxyMetrics { core.metrics }

    /// Prometheus text: the counters, and the route cache's gauges.
    public func renderMetrics() -> String {
        let gauges = routes.gauges
        return metrics.render() + [
            "# HELP hangar_proxy_routes Routes cached (tokens the controller resolved).",
            "# TYPE hangar_proxy_routes gauge", "hangar_proxy_routes \(gauges.routes)",
            "# HELP hangar_proxy_unknown_tokens Tokens remembered as unknown for a while.",
            "# TYPE hangar_proxy_unknown_tokens gauge", "hangar_proxy_unknown_tokens \(gauges.unknown)",
            "# HELP hangar_proxy_route_lookups Route lookups waiting for the controller.",
            "# TYPE hangar_proxy_route_lookups gauge", "hangar_proxy_route_lookups \(gauges.lookups)",
            "# HELP hangar_proxy_controller_connected 1 while the proxy is connected to the controller.",
            "# TYPE hangar_proxy_controller_connected gauge",
            "hangar_proxy_controller_connected \(gauges.connected ? 1 : 0)",
            "# HELP hangar_proxy_loop_connections Client connections each loop carries (new ones go to the loop with the fewest).",
            "# TYPE hangar_proxy_loop_connections gauge",
        ].joined(separator: "\n") + "\n"
            + loops.enumerated().map { "hangar_proxy_loop_connections{loop=\"\($0.offset)\"} \($0.element.load.load(ordering: .relaxed))\n" }
            .joined()
    }

    public func run() async throws {
        for (index, loop) in loops.enumerated() where !startLoopThread(loop) {
            for started in loops[..<index] { await started.stop() }
            Glibc.close(listener)
            throw ProxyError("could not start a proxy loop thread")
        }
        logger.info(
            "proxy listening",
            metadata: ["address": "\(configuration.address):\(port)", "cluster": "\(configuration.cluster)"])
        // The link runs until shutdown; then the loops close what they carry.
        try? await link.run()
        for loop in loops { await loop.stop() }
        Glibc.close(listener)
    }

    private func startLoopThread(_ loop: PumpLoop) -> Bool {
        startThread { loop.run() } == 0
    }
}
