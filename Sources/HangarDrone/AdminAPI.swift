import HangarCore
import HangarPolicy
import HTTPTypes
import Hummingbird
import NIOCore

/// The drone's admin API (HTTP, served on a unix socket by `hangar drone`): spawn,
/// list, inspect, terminate, logs, metrics. An operator tool that stays once the
/// controller exists.
///
///     POST /backends                  {"key", "image", "command"?, "env"?, "limits"?,
///                                      "max_idle_seconds"?, "lifetime_limit_seconds"?, "fencing_token"?}
///     GET  /backends                  every backend
///     GET  /backends/{id}             one
///     POST /backends/{id}/terminate   terminate (reason external)
///     GET  /backends/{id}/logs        its stdout and stderr as kept in memory (?since=N: after
///                                     the first N bytes; the x-hangar-log-offset header gives
///                                     the next N)
///     GET  /events                    status changes not yet acknowledged (the store's log)
///     POST /events/ack                {"through": ID}: acknowledges events up to ID
///     GET  /metrics                   Prometheus text
///
/// Errors are `AdminError`s: {"id", "kind", "message"} with a 4xx for bad input.
public enum AdminAPI {
    /// A spawn request as JSON.
    public struct SpawnBody: Decodable, Sendable {
        public var key: String
        public var image: String
        public var command: [String]?
        public var env: [String: String]?
        public var limits: LimitsBody?
        public var max_idle_seconds: Int?
        public var lifetime_limit_seconds: Int?
        public var fencing_token: UInt64?
    }

    /// Limits a request asks for, as in a policy's [limits] ("512m", 1.5).
    public struct LimitsBody: Decodable, Sendable {
        public var memory_max: String?
        public var pids_max: Int?
        public var cpu: Double?
    }

    /// A backend as the API shows it.
    public struct BackendView: ResponseEncodable, Sendable {
        public var id: String
        public var key: String
        public var status: String
        public var status_code: Int
        public var reason: String?
        public var exit_code: Int32?

        init(_ backend: Backend) {
            let state = backend.current
            self.init(
                id: backend.id, key: backend.key.rawValue, status: state.status, reason: state.reason,
                exitCode: state.exitCode)
        }

        init(id: BackendID, key: String, status: BackendStatus, reason: TerminationReason?, exitCode: Int32?) {
            self.id = id.rawValue
            self.key = key
            self.status = status.description
            status_code = status.rawValue
            self.reason = reason?.rawValue
            exit_code = exitCode
        }
    }

    public struct EventView: ResponseEncodable, Sendable {
        public var id: Int64
        public var backend: String
        public var status: String
        public var reason: String?
        public var exit_code: Int32?

        init(_ event: DroneStore.Event) {
            id = event.id
            backend = event.backend.rawValue
            status = event.status.description
            reason = event.reason?.rawValue
            exit_code = event.exitCode
        }
    }

    public struct EventList: ResponseEncodable, Sendable {
        public var events: [EventView]
    }

    /// Acknowledges events up to and including `through`.
    public struct AckBody: Decodable, Sendable {
        public var through: Int64
    }

    public struct BackendList: ResponseEncodable, Sendable {
        public var backends: [BackendView]
    }

    /// The routes over `drone`.
    public static func router(for drone: Drone) -> Router<BasicRequestContext> {
        let router = Router()
        router.post("/backends") { request, context -> EditedResponse<BackendView> in
            let body: SpawnBody
            do {
                body = try await request.decode(as: SpawnBody.self, context: context)
            } catch {
                throw AdminError(.badRequest, "the body is not a spawn request: \(error)")
            }
            let spawn = try spawnRequest(body)
            do {
                let backend = try drone.spawn(spawn)
                return EditedResponse(status: .created, response: BackendView(backend))
            } catch {
                throw AdminError(.refused, "\(error)")
            }
        }
        router.get("/backends") { _, _ in
            BackendList(backends: drone.allBackends.sorted { $0.id < $1.id }.map(BackendView.init))
        }
        router.get("/backends/:id") { _, context in
            let id = try backendID(context)
            if let backend = drone.backend(id) { return BackendView(backend) }
            // One of a previous run (or one no longer kept in memory), from the drone's store.
            guard let stored = try drone.store?.backend(id) else {
                throw AdminError(.notFound, "no backend \(id) on this drone")
            }
            return BackendView(
                id: id, key: stored.key, status: stored.status, reason: stored.reason, exitCode: stored.exitCode)
        }
        router.get("/events") { _, _ in
            EventList(events: try drone.store?.unacknowledged().map(EventView.init) ?? [])
        }
        router.post("/events/ack") { request, context -> HTTPResponse.Status in
            let body: AckBody
            do {
                body = try await request.decode(as: AckBody.self, context: context)
            } catch {
                throw AdminError(.badRequest, "the body is not an acknowledgement {\"through\": ID}: \(error)")
            }
            try drone.store?.acknowledge(upTo: body.through)
            return .noContent
        }
        router.post("/backends/:id/terminate") { _, context -> EditedResponse<BackendView> in
            let backend = try backend(drone, context)
            backend.terminate(.external)
            return EditedResponse(status: .accepted, response: BackendView(backend))
        }
        router.get("/backends/:id/logs") { request, context -> Response in
            // ?since=N: only what came after the first N bytes; x-hangar-log-offset says
            // where the next request should start.
            let since = request.uri.queryParameters.get("since", as: Int.self) ?? 0
            let (bytes, next) = try backend(drone, context).logs.since(since)
            var headers = HTTPFields()
            headers[.contentType] = "text/plain; charset=utf-8"
            headers[HTTPField.Name("x-hangar-log-offset")!] = "\(next)"
            return Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(bytes: bytes)))
        }
        router.get("/metrics") { _, _ in
            drone.metrics()
        }
        return router
    }

    static func backendID(_ context: BasicRequestContext) throws -> BackendID {
        let text = try context.parameters.require("id")
        do {
            return try BackendID(text)
        } catch {
            throw AdminError(.badRequest, "\(error)")
        }
    }

    static func backend(_ drone: Drone, _ context: BasicRequestContext) throws -> Backend {
        let id = try backendID(context)
        guard let backend = drone.backend(id) else { throw AdminError(.notFound, "no backend \(id) on this drone") }
        return backend
    }

    /// Checks a body the way a policy file is checked: clear errors, nothing half-applied.
    static func spawnRequest(_ body: SpawnBody) throws -> SpawnRequest {
        func bad(_ message: String) -> AdminError { AdminError(.badRequest, message) }
        let image: ImageName
        do {
            image = try ImageName(body.image)
        } catch {
            throw bad("image: \(error)")
        }
        let key: KeyName
        do {
            key = try KeyName(body.key)
        } catch {
            throw bad("key: \(error)")
        }
        var request = SpawnRequest(key: key, image: image)
        if let command = body.command {
            request.command = command
        }
        request.environment = body.env ?? [:]
        if let limits = body.limits {
            if let memory = limits.memory_max {
                do {
                    request.limits.memoryMax = try ByteSize(parsing: memory)
                } catch {
                    throw bad("limits.memory_max: \(error)")
                }
            }
            request.limits.pidsMax = limits.pids_max
            request.limits.cpu = limits.cpu
        }
        // Within the policy's bounds (limits.max.idle_timeout and wall_timeout), checked by the drone.
        for (name, value) in [("max_idle_seconds", body.max_idle_seconds), ("lifetime_limit_seconds", body.lifetime_limit_seconds)] {
            if let value, !(1...(30 * 86400)).contains(value) {
                throw bad("\(name): must be 1...2592000 (30 days), got \(value)")
            }
        }
        request.limits.idleTimeout = body.max_idle_seconds
        request.limits.wallTimeout = body.lifetime_limit_seconds
        request.fencingToken = body.fencing_token ?? 1
        do {
            try request.validate()
        } catch {
            throw bad(error.description)
        }
        return request
    }
}

/// An error of the admin API, rendered once at the edge as `{"id", "kind", "message"}`:
/// a kind a client can act on, a message a person can read, and an id to find it in the
/// drone's log (internal errors are logged with it).
public struct AdminError: HTTPResponseError, Sendable {
    public enum Kind: String, Sendable, Codable {
        /// The request is malformed (400).
        case badRequest = "bad-request"
        /// No such backend (404).
        case notFound = "not-found"
        /// Well-formed, but the drone will not do it: capacity, a policy's maximum, a key (422).
        case refused
    }

    public let id: String
    public let kind: Kind
    public let message: String

    public init(_ kind: Kind, _ message: String) {
        id = APIErrorBody.newID()
        self.kind = kind
        self.message = message
    }

    public var status: HTTPResponse.Status {
        switch kind {
        case .badRequest: .badRequest
        case .notFound: .notFound
        case .refused: .unprocessableContent
        }
    }

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        var response = try context.responseEncoder.encode(
            APIErrorBody(id: id, kind: kind.rawValue, message: message), from: request, context: context)
        response.status = status
        return response
    }
}

extension APIErrorBody: ResponseEncodable {}
