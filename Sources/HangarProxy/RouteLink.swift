import FoundationEssentials
import HangarCore
import HTTPTypes
import HummingbirdWSClient
import Logging
import ServiceLifecycle

/// How a proxy reaches its controller.
public struct RouteLinkConfiguration: Sendable {
    /// The controller's base URL ("http://10.0.0.1:8080").
    public var url: String
    /// Its bearer token, when it has one.
    public var token: String?
    /// The cluster this proxy serves: the controller routes only its backends.
    public var cluster: ClusterName
    /// Reconnects wait from `reconnectMin`, doubling up to `reconnectMax`, with jitter.
    public var reconnectMin: Duration = .milliseconds(100)
    public var reconnectMax: Duration = .seconds(5)

    public init(url: String, token: String? = nil, cluster: ClusterName) {
        self.url = url
        self.token = token
        self.cluster = cluster
    }
}

/// The proxy's side of `ProxyMessage`: one WebSocket to the controller, reconnected with
/// backoff. It asks for the routes the cache lacks and applies revocations as they come,
/// to the cache and (through `revoked`) to the connections being carried.
public final class RouteLink: Service {
    let configuration: RouteLinkConfiguration
    let cache: RouteCache
    let revoked: @Sendable (Revocation) -> Void
    let logger: Logger

    public init(
        configuration: RouteLinkConfiguration, cache: RouteCache, logger: Logger,
        revoked: @escaping @Sendable (Revocation) -> Void
    ) {
        self.configuration = configuration
        self.cache = cache
        self.revoked = revoked
        self.logger = logger
    }

    /// Keeps the link until cancelled or shut down.
    public func run() async throws {
        await cancelWhenGracefulShutdown { await self.keepConnected() }
        cache.linked(nil)
    }

    private func keepConnected() async {
        let url = controllerSocketURL(configuration.url, cluster: configuration.cluster, socket: "proxy-socket")
        await reconnecting(
            to: url, minimum: configuration.reconnectMin, maximum: configuration.reconnectMax, logger: logger
        ) {
            // Revocations may be missed once the session ends: nothing cached may be used.
            defer { cache.linked(nil) }
            var settings = WebSocketClientConfiguration(maxFrameSize: 1 << 20)
            if let token = configuration.token { settings.additionalHeaders[.authorization] = "Bearer \(token)" }
            try await WebSocketClient.connect(url: url, configuration: settings, logger: logger) { inbound, outbound, _ in
                try await self.session(inbound: inbound, outbound: outbound)
            }
        }
    }

    private func session(inbound: WebSocketInboundStream, outbound: WebSocketOutboundWriter) async throws {
        let (tokens, outbox) = AsyncStream<String>.makeStream()
        let encoder = JSONEncoder()
        let decoder = JSONDecoder()
        logger.info("connected to the controller", metadata: ["controller.url": "\(configuration.url)"])
        cache.linked(outbox)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                for await token in tokens {
                    let text = String(decoding: try encoder.encode(ProxyMessage.routeRequest(token: token)), as: UTF8.self)
                    try await outbound.write(.text(text))
                }
            }
            group.addTask {
                defer { outbox.finish() }
                for try await frame in inbound.messages(maxSize: 1 << 20) {
                    guard case .text(let text) = frame,
                        let message = try? decoder.decode(ProxyMessage.self, from: Data(text.utf8))
                    else {
                        self.logger.warning("a message from the controller that is not a proxy message")
                        continue
                    }
                    switch message {
                    case .route(let token, let route): self.cache.resolved(token, route)
                    case .revoked(let revocation):
                        self.cache.revoke(revocation)
                        self.revoked(revocation)
                    case .routeRequest: continue
                    }
                }
            }
            try await group.next()
            group.cancelAll()
        }
    }
}
