import AsyncHTTPClient
import FoundationEssentials
import HangarCore
import HangarStore
import HTTPTypes
import Hummingbird
import HummingbirdWebSocket
import Logging
import NIOCore
import NIOHTTP1

/// The controller's HTTP API, in Plane's shape (docs/API.md):
///
///     POST /ctrl/connect                        connect to a key's backend (or start one)
///     GET  /ctrl/status                         the controller
///     GET  /ctrl/c/:cluster/state               drones, their load, backends by status
///     POST /ctrl/c/:cluster/d/:drone/drain      no new backends on a drone (undrain: again)
///     POST /ctrl/b/:backend/soft-terminate      SIGTERM, a grace period, SIGKILL
///     POST /ctrl/b/:backend/hard-terminate      SIGKILL
///     POST /ctrl/b/revoke                       revoke a token or grants, tell the proxies
///     GET  /ctrl/c/:cluster/drone-socket        WebSocket: a drone (DroneMessage)
///     GET  /ctrl/c/:cluster/proxy-socket        WebSocket: a proxy (ProxyMessage)
///     GET  /pub/b/:backend/status               a backend's status
///     GET  /pub/b/:backend/status-stream        server-sent events: replay, then live
///     GET  /pub/health                          200 while the store answers
///     GET  /metrics                             Prometheus text
///
/// /ctrl needs the bearer token (or the forward-auth URL's yes); /pub and /metrics are safe
/// to expose (but for `hangar dev`'s `moreMetrics`: the drone's page names keys).
public enum ControllerAPI {
    /// The router over `controller`; /metrics ends with `moreMetrics` (`hangar dev` adds its
    /// drone's and proxy's there).
    public static func router(
        for controller: Controller, moreMetrics: @escaping @Sendable () async -> String = { "" }
    ) -> Router<ControllerContext> {
        let router = Router(context: ControllerContext.self)
        router.middlewares.add(ErrorMiddleware(counters: controller.counters))
        let ctrl = router.group("ctrl").add(middleware: ControllerAuth(configuration: controller.configuration))
        ctrl.post("connect") { request, context -> ConnectResponse in
            let body = try await decode(ConnectRequest.self, request, context, limit: controller.configuration.maxBodyBytes)
            return try await controller.connect(body, host: request.head.authority)
        }
        ctrl.get("status") { _, _ in
            ControllerStatusView(
                status: "ok", version: HangarVersion.current, protocol_version: DroneProtocol.version,
                default_cluster: controller.configuration.defaultCluster.rawValue)
        }
        ctrl.get("c/:cluster/state") { _, context in
            try await controller.clusterState(try name(context, "cluster", ClusterName.init))
        }
        for (verb, draining) in [("drain", true), ("undrain", false)] {
            ctrl.post("c/:cluster/d/:drone/\(verb)") { _, context -> HTTPResponse.Status in
                try await controller.setDraining(
                    cluster: try name(context, "cluster", ClusterName.init), drone: try name(context, "drone", DroneName.init),
                    draining)
                return .noContent
            }
        }
        for (verb, hard) in [("soft-terminate", false), ("hard-terminate", true)] {
            ctrl.post("b/:backend/\(verb)") { _, context in
                try await controller.terminate(try name(context, "backend", BackendID.init), hard: hard)
            }
        }
        ctrl.post("b/revoke") { request, context in
            try await controller.revoke(
                try await decode(RevokeRequest.self, request, context, limit: controller.configuration.maxBodyBytes))
        }
        ctrl.ws("c/:cluster/drone-socket") { _, context in
            (try? ClusterName(context.parameters.get("cluster") ?? "")) == nil ? .dontUpgrade : .upgrade([:])
        } onUpgrade: { inbound, outbound, context in
            guard let cluster = try? ClusterName(context.requestContext.parameters.get("cluster") ?? "") else { return }
            await controller.serveDrone(cluster: cluster, inbound: inbound, outbound: outbound)
        }
        ctrl.ws("c/:cluster/proxy-socket") { _, context in
            (try? ClusterName(context.parameters.get("cluster") ?? "")) == nil ? .dontUpgrade : .upgrade([:])
        } onUpgrade: { inbound, outbound, context in
            guard let cluster = try? ClusterName(context.requestContext.parameters.get("cluster") ?? "") else { return }
            await controller.serveProxy(cluster: cluster, inbound: inbound, outbound: outbound)
        }

        let pub = router.group("pub")
        pub.get("b/:backend/status") { _, context in
            try await controller.status(of: try name(context, "backend", BackendID.init))
        }
        pub.get("b/:backend/status-stream") { request, context in
            let backend = try name(context, "backend", BackendID.init)
            let after = request.headers[HTTPField.Name("Last-Event-ID")!].flatMap { Int64($0) } ?? 0
            return try await controller.statusStream(backend, after: after)
        }
        pub.get("health") { _, _ -> HTTPResponse.Status in
            do {
                _ = try await controller.store.now()
                return .ok
            } catch {
                return .serviceUnavailable
            }
        }
        router.get("metrics") { _, _ in
            await controller.metrics() + moreMetrics()
        }
        return router
    }

    static let bodyDecoder = JSONDecoder()

    /// A JSON body of at most `limit` bytes, strictly decoded; errors name the field.
    static func decode<T: Decodable>(_ type: T.Type, _ request: Request, _ context: some RequestContext, limit: Int)
        async throws -> T
    {
        let buffer: ByteBuffer
        do {
            buffer = try await request.body.collect(upTo: limit)
        } catch is NIOTooManyBytesError {
            throw ControllerError(.payloadTooLarge, "the body is over \(limit) bytes")
        }
        do {
            return try bodyDecoder.decode(T.self, from: Data(buffer.readableBytesView))
        } catch let error as DecodingError {
            throw ControllerError.badRequest(error.explanation)
        } catch {
            throw ControllerError.badRequest("the body is not valid JSON")
        }
    }

    /// A path parameter as a validated name; a bad one is a 400 that says which.
    static func name<T>(_ context: some RequestContext, _ parameter: String, _ make: (String) throws -> T) throws -> T {
        let text = context.parameters.get(parameter) ?? ""
        do {
            return try make(text)
        } catch {
            throw ControllerError.badRequest("\(parameter) in the path: \(error)")
        }
    }
}

/// The request context of the controller's routes: JSON without escaped slashes (URLs
/// read as URLs), and WebSocket upgrades.
public struct ControllerContext: RequestContext, WebSocketRequestContext {
    public var coreContext: CoreRequestContextStorage
    public let webSocket: WebSocketHandlerReference<Self>

    public init(source: Source) {
        coreContext = .init(source: source)
        webSocket = .init()
    }

    public var responseEncoder: JSONEncoder { .api }
}

extension JSONEncoder {
    /// The API's JSON: URLs unescaped, keys sorted (stable output).
    static let api: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.withoutEscapingSlashes, .sortedKeys]
        return encoder
    }()
}

/// The version this build reports.
public enum HangarVersion {
    public static let current = "0.6.0-dev"
}

extension ControllerError: HTTPResponseError {
    public var status: HTTPResponse.Status { HTTPResponse.Status(code: statusCode) }
    public var headers: HTTPFields { [.contentType: "application/json"] }

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        let data = (try? JSONEncoder.api.encode(body)) ?? Data()
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }
}

/// Every failure leaves as `{id, kind, message}`: Hummingbird's own errors (a method
/// not allowed, a route not found) too; an internal error is logged with its id. Each is
/// counted by kind (`hangar_controller_errors_total`).
struct ErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    let counters: ControllerCounters

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
        -> Response
    {
        do {
            return try await next(request, context)
        } catch let error as ControllerError {
            counters.failed(error.kind)
            if error.kind == .internalError {
                context.logger.error("internal error", metadata: ["error.id": "\(error.id)", "error": "\(error.message)"])
            }
            return try error.response(from: request, context: context)
        } catch let error as HTTPError {
            let kind: ControllerError.Kind = error.status == .notFound ? .notFound : .badRequest
            counters.failed(kind)
            var response = try ControllerError(kind, error.body ?? "\(error.status.reasonPhrase)").response(
                from: request, context: context)
            response.status = error.status
            return response
        }
    }
}

/// /ctrl: a bearer token compared in constant time, or a forward-auth URL's 2xx.
struct ControllerAuth<Context: RequestContext>: RouterMiddleware {
    let configuration: ControllerConfiguration

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
        -> Response
    {
        if let token = configuration.token {
            let given = request.headers[.authorization] ?? ""
            if constantTimeEqual(Array(given.utf8), Array("Bearer \(token)".utf8)) {
                return try await next(request, context)
            }
            if configuration.forwardAuth == nil {
                throw ControllerError(.unauthorized, "/ctrl needs the header Authorization: Bearer <the controller's token>")
            }
        }
        if let url = configuration.forwardAuth {
            guard try await ForwardAuth.allows(request, url: url) else {
                throw ControllerError(.unauthorized, "the forward-auth service refused the request")
            }
        }
        return try await next(request, context)
    }
}

/// Plane's forward auth: the request's method, URI, Authorization and Cookie go to a URL;
/// a 2xx lets it through.
enum ForwardAuth {
    static func allows(_ request: Request, url: String) async throws -> Bool {
        var check = HTTPClientRequest(url: url)
        check.method = .GET
        for name in [HTTPField.Name.authorization, .cookie] {
            for value in request.headers[values: name] { check.headers.add(name: name.rawName, value: value) }
        }
        check.headers.add(name: "X-Forwarded-Method", value: request.method.rawValue)
        check.headers.add(name: "X-Forwarded-Uri", value: request.uri.description)
        do {
            let response = try await HTTPClient.shared.execute(check, timeout: .seconds(5))
            return (200..<300).contains(Int(response.status.code))
        } catch {
            throw ControllerError(.internalError, "the forward-auth service at \(url) did not answer: \(error)")
        }
    }
}

extension ConnectResponse: ResponseEncodable {}
extension BackendStatusView: ResponseEncodable {}
extension ClusterStateView: ResponseEncodable {}
extension ControllerStatusView: ResponseEncodable {}
extension RevokeResponse: ResponseEncodable {}

extension Controller {
    /// The HTTP server (with WebSocket upgrades for drones and proxies) on `host:port`;
    /// `onRunning` gets the port it listens on (useful with port 0).
    public func application(
        host: String, port: Int, onRunning: @escaping @Sendable (Int) async -> Void = { _ in },
        moreMetrics: @escaping @Sendable () async -> String = { "" }
    ) -> some ApplicationProtocol {
        let router = ControllerAPI.router(for: self, moreMetrics: moreMetrics)
        return Application(
            router: router,
            server: .http1WebSocketUpgrade(webSocketRouter: router, configuration: .init(maxFrameSize: 1 << 20)),
            configuration: .init(address: .hostname(host, port: port), serverName: "hangar-controller"),
            onServerRunning: { channel in await onRunning(channel.localAddress?.port ?? port) },
            logger: logger)
    }
}
