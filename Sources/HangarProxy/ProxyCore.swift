import CShims
import HangarCore
import Logging
import Synchronization

/// The proxy's settings, loaded once at the edge (flags, environment).
public struct ProxyConfiguration: Sendable {
    /// Where it listens.
    public var address = "127.0.0.1"
    /// 0: any free port (see `Proxy.port`).
    public var port: UInt16 = 0
    /// The cluster it serves, named after its public address ("localhost:9090"): a
    /// request's Host must be the cluster or a subdomain of it.
    public var cluster: ClusterName
    /// The secret shared with the drones' ingress ports (at least 16 bytes).
    public var ingressSecret: [UInt8]
    /// Event loops, each on a thread of its own.
    public var loops = 2
    /// Bounds on a request head.
    public var headLimits = HeadLimits()
    /// A request head must be complete this long after its first byte (slow heads: 408).
    public var headTimeout: Duration = .seconds(10)
    /// A kept-alive connection with no request for this long is closed.
    public var idleTimeout: Duration = .seconds(60)
    /// The controller must answer a route lookup within this (else 504).
    public var lookupTimeout: Duration = .seconds(5)
    /// A backend must be ready and connected within this (else 504); a request waits for
    /// a backend that is still starting.
    public var readyTimeout: Duration = .seconds(30)
    /// `GET /` is redirected here (301); nil: 400.
    public var rootRedirect: String?
    /// x-forwarded-proto, unless the client (a TLS terminator in front) set it.
    public var scheme = "http"
    /// Connections one loop carries at most; more are reset at once.
    public var maxConnectionsPerLoop = 50_000
    /// The size of each splice pipe.
    public var pipeSize: Int32 = 1 << 20

    public init(cluster: ClusterName, ingressSecret: [UInt8]) {
        self.cluster = cluster
        self.ingressSecret = ingressSecret
    }

    /// Refuses settings that cannot work.
    public func validate() throws(ProxyError) {
        guard ingressSecret.count >= 16 else { throw ProxyError("the ingress secret must be at least 16 bytes") }
        guard (1...64).contains(loops) else { throw ProxyError("loops: from 1 to 64, got \(loops)") }
        guard IPv4Endpoint("\(address):1") != nil else {
            throw ProxyError("address: an IPv4 address to listen on, got \"\(address.prefix(64))\"")
        }
        for (name, value) in [
            ("head timeout", headTimeout), ("idle timeout", idleTimeout), ("lookup timeout", lookupTimeout),
            ("ready timeout", readyTimeout),
        ] {
            guard value >= .milliseconds(100), value <= .seconds(3600) else {
                throw ProxyError("\(name): from 100 ms to an hour, got \(value)")
            }
        }
        if let rootRedirect {
            guard isHTTPURL(rootRedirect),
                !rootRedirect.contains(where: { $0 == "\r" || $0 == "\n" || $0 == " " })
            else { throw ProxyError("root redirect: an http(s) URL, got \"\(rootRedirect.prefix(80))\"") }
        }
        guard scheme == "http" || scheme == "https" else { throw ProxyError("scheme: http or https, got \(scheme)") }
    }
}

/// What every loop shares: settings, routes, counters, readiness.
final class ProxyCore: Sendable {
    let configuration: ProxyConfiguration
    let routes: RouteCache
    let metrics = ProxyMetrics()
    /// The proxy's 502 and 504 replies are logged (notice, with backend.id when it is
    /// known); its other replies at debug.
    let logger: Logger
    let noticeBudget = LogBudget(perSecond: 10)

    init(configuration: ProxyConfiguration, routes: RouteCache, logger: Logger) {
        self.configuration = configuration
        self.routes = routes
        self.logger = logger
    }
}

/// At most `perSecond` log lines a second from every loop together; those over it are
/// counted, and the next line that passes says how many were suppressed.
final class LogBudget: Sendable {
    private struct Window {
        var second: Int64 = 0
        var used = 0
        var dropped = 0
    }

    private let window = Mutex(Window())
    let perSecond: Int

    init(perSecond: Int) { self.perSecond = perSecond }

    /// nil: drop this line; else how many were dropped since the last line that passed.
    func take() -> Int? {
        let second = wallClockMilliseconds() / 1000
        return window.withLock { window in
            if window.second != second { (window.second, window.used) = (second, 0) }
            guard window.used < perSecond else {
                window.dropped += 1
                return nil
            }
            window.used += 1
            defer { window.dropped = 0 }
            return window.dropped
        }
    }
}

/// The proxy's counters (Prometheus text from `render`).
public final class ProxyMetrics: @unchecked Sendable {
    public enum Counter: Int, CaseIterable, Sendable {
        case connections, requests, tunnels, refusedConnections, acceptFailures, bytesToBackends, bytesToClients
        case upstreamConnections, smallPipes

        var name: String {
            switch self {
            case .connections: "hangar_proxy_connections_total"
            case .requests: "hangar_proxy_requests_total"
            case .tunnels: "hangar_proxy_upgrades_total"
            case .refusedConnections: "hangar_proxy_connections_refused_total"
            case .acceptFailures: "hangar_proxy_accept_failures_total"
            case .bytesToBackends: "hangar_proxy_bytes_to_backends_total"
            case .bytesToClients: "hangar_proxy_bytes_to_clients_total"
            case .upstreamConnections: "hangar_proxy_upstream_connections_total"
            case .smallPipes: "hangar_proxy_small_pipes_total"
            }
        }

        var help: String {
            switch self {
            case .connections: "Client connections accepted."
            case .requests: "Request heads read from clients."
            case .tunnels: "Connections turned into tunnels by a 101 (WebSockets)."
            case .refusedConnections: "Client connections closed at once (the proxy was full)."
            case .acceptFailures: "Accepts that failed for want of file descriptors."
            case .bytesToBackends: "Bytes sent to backends: request heads, bodies, tunnel traffic."
            case .bytesToClients: "Bytes sent to clients: response heads, bodies, tunnel traffic, the proxy's own replies."
            case .upstreamConnections: "Connections opened to drones' ingress ports."
            case .smallPipes: "Pipes the kernel made smaller than asked (pipe-max-size, or pipe-user-pages-soft without CAP_SYS_RESOURCE)."
            }
        }
    }

    /// One atomic per counter, in `Counter` order, each on a cache line of its own (64
    /// bytes): the loops count without a shared lock, and counting one thing does not
    /// slow another down (hence @unchecked Sendable: every access is atomic).
    private let counters: UnsafeMutablePointer<Int64>
    private static let stride = 64 / MemoryLayout<Int64>.stride
    private let statuses = Mutex([Int: Int]())
    let open = Atomic<Int>(0)

    init() {
        let count = Counter.allCases.count * Self.stride
        counters = UnsafeMutableRawPointer.allocate(byteCount: count * MemoryLayout<Int64>.stride, alignment: 64)
            .initializeMemory(as: Int64.self, repeating: 0, count: count)
    }

    deinit { counters.deallocate() }

    func add(_ counter: Counter, _ amount: Int = 1) {
        hg_atomic_add_i64(counters + counter.rawValue * Self.stride, Int64(amount))
    }

    func answered(_ status: Int) {
        statuses.withLock { $0[status, default: 0] += 1 }
    }

    /// A counter's value now.
    public func value(_ counter: Counter) -> Int { Int(hg_atomic_load_i64(counters + counter.rawValue * Self.stride)) }

    /// Responses the proxy made itself (errors, redirects, /ready), by status.
    public var ownResponses: [Int: Int] { statuses.withLock { $0 } }

    /// Connections open now.
    public var openConnections: Int { open.load(ordering: .relaxed) }

    /// Prometheus text.
    public func render() -> String {
        var text = ""
        for counter in Counter.allCases {
            text += "# HELP \(counter.name) \(counter.help)\n# TYPE \(counter.name) counter\n\(counter.name) \(value(counter))\n"
        }
        text += "# HELP hangar_proxy_open_connections Client connections open now.\n"
        text += "# TYPE hangar_proxy_open_connections gauge\nhangar_proxy_open_connections \(openConnections)\n"
        text += "# HELP hangar_proxy_own_responses_total Responses the proxy made itself, by status.\n"
        text += "# TYPE hangar_proxy_own_responses_total counter\n"
        for (status, count) in ownResponses.sorted(by: { $0.key < $1.key }) {
            text += "hangar_proxy_own_responses_total{status=\"\(status)\"} \(count)\n"
        }
        return text
    }
}
