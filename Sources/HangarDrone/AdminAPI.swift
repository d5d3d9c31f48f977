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
///                                      "max_idle_seconds"?, "lifetime_seconds"?, "fencing_token"?}
///     GET  /backends                  every backend
///     GET  /backends/{id}             one
///     POST /backends/{id}/terminate   terminate (reason external)
///     GET  /backends/{id}/logs        its stdout and stderr as kept in memory (?since=N: after
///                                     the first N bytes; the x-hangar-log-offset header gives
///                                     the next N)
///     GET  /events                    status changes not yet acknowledged (the store's log)
///     GET  /metrics                   Prometheus text
public enum AdminAPI {
    /// A spawn request as JSON.
    public struct SpawnBody: Decodable, Sendable {
        public var key: String
        public var image: String
        public var command: [String]?
        public var env: [String: String]?
        public var limits: LimitsBody?
        public var max_idle_seconds: Double?
        public var lifetime_seconds: Double?
        public var fencing_token: UInt64?
    }

    /// Limits a request asks for, as in a policy's [limits] ("512m", 1.5, "1h").
    public struct LimitsBody: Decodable, Sendable {
        public var memory_max: String?
        public var pids_max: Int?
        public var cpu: Double?
        public var wall_timeout_seconds: Int?
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
            self.init(id: backend.id, key: backend.key, status: state.status, reason: state.reason, exitCode: state.exitCode)
        }

        init(id: String, key: String, status: BackendStatus, reason: TerminationReason?, exitCode: Int32?) {
            self.id = id
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
            backend = event.backend
            status = event.status.description
            reason = event.reason?.rawValue
            exit_code = event.exitCode
        }
    }

    public struct EventList: ResponseEncodable, Sendable {
        public var events: [EventView]
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
                throw HTTPError(.badRequest, message: "the body is not a spawn request: \(error)")
            }
            let spawn = try spawnRequest(body)
            do {
                let backend = try drone.spawn(spawn)
                return EditedResponse(status: .created, response: BackendView(backend))
            } catch {
                throw HTTPError(.unprocessableContent, message: "\(error)")
            }
        }
        router.get("/backends") { _, _ in
            BackendList(backends: drone.allBackends.sorted { $0.id < $1.id }.map(BackendView.init))
        }
        router.get("/backends/:id") { _, context in
            let id = try context.parameters.require("id")
            if let backend = drone.backend(id) { return BackendView(backend) }
            // One of a previous run, from the drone's store.
            guard let stored = try drone.store?.state(of: id) else {
                throw HTTPError(.notFound, message: "no backend \(id) on this drone")
            }
            return BackendView(id: id, key: "", status: stored.status, reason: stored.reason, exitCode: nil)
        }
        router.get("/events") { _, _ in
            EventList(events: try drone.store?.unacknowledged().map(EventView.init) ?? [])
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

    static func backend(_ drone: Drone, _ context: BasicRequestContext) throws -> Backend {
        let id = try context.parameters.require("id")
        guard let backend = drone.backend(id) else { throw HTTPError(.notFound, message: "no backend \(id) on this drone") }
        return backend
    }

    /// Checks a body the way a policy file is checked: clear errors, nothing half-applied.
    static func spawnRequest(_ body: SpawnBody) throws -> SpawnRequest {
        func bad(_ message: String) -> HTTPError { HTTPError(.badRequest, message: message) }
        guard !body.key.isEmpty, body.key.utf8.count <= 256, !body.key.utf8.contains(0) else {
            throw bad("key: must be 1...256 bytes without NUL")
        }
        let image: ImageName
        do {
            image = try ImageName(body.image)
        } catch {
            throw bad("image: \(error)")
        }
        var request = SpawnRequest(key: body.key, image: image)
        if let command = body.command {
            guard !command.isEmpty, command.allSatisfy({ !$0.utf8.contains(0) }) else {
                throw bad("command: must be a non-empty list of arguments without NUL")
            }
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
            request.limits.wallTimeout = limits.wall_timeout_seconds
        }
        for (name, value) in [("max_idle_seconds", body.max_idle_seconds), ("lifetime_seconds", body.lifetime_seconds)] {
            if let value, !(value > 0 && value <= 30 * 86400) { throw bad("\(name): must be between 0 and 30 days, got \(value)") }
        }
        request.maxIdle = body.max_idle_seconds.map { .milliseconds(Int64($0 * 1000)) }
        request.lifetime = body.lifetime_seconds.map { .milliseconds(Int64($0 * 1000)) }
        request.fencingToken = body.fencing_token ?? 1
        return request
    }
}
