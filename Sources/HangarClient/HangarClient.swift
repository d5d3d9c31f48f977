import AsyncHTTPClient
import FoundationEssentials
import HangarCore
import NIOCore
import NIOHTTP1

/// An async client for the controller's API (docs/API.md), for the CLI, tests and users.
///
///     let client = HangarClient(url: "http://127.0.0.1:8080", token: secret)
///     let backend = try await client.connect(ConnectRequest(
///         key: KeyConfig(name: try KeyName("doc-1")),
///         spawn_config: SpawnConfig(executable: Executable(image: try ImageName("python")))))
///     _ = try await client.waitUntilReady(try BackendID(backend.backend_id))
public struct HangarClient: Sendable {
    /// The controller's base URL, without a trailing slash.
    public let url: String
    let token: String?
    let http: HTTPClient
    /// Each request's bound (not the status stream's).
    public var timeout: TimeAmount = .seconds(30)

    public init(url: String, token: String? = nil, http: HTTPClient = .shared) {
        var base = url
        while base.hasSuffix("/") { base.removeLast() }
        self.url = base
        self.token = token
        self.http = http
    }

    /// What went wrong with a call.
    public enum Failure: Error, CustomStringConvertible, Sendable {
        /// The API refused it: its status and `{id, kind, message}`.
        case api(status: Int, error: APIErrorBody)
        /// An answer that is not the API's.
        case unexpected(status: Int, body: String)

        public var description: String {
            switch self {
            case .api(let status, let error): "\(status) \(error.kind): \(error.message)"
            case .unexpected(let status, let body): "\(status): \(body.prefix(200))"
            }
        }

        /// The error's kind (KeyHeld, NoDroneAvailable…), when the API gave one.
        public var kind: String? {
            if case .api(_, let error) = self { return error.kind }
            return nil
        }
    }

    public func connect(_ request: ConnectRequest) async throws -> ConnectResponse {
        try await call(.POST, "/ctrl/connect", body: request)
    }

    public func status(_ backend: BackendID) async throws -> BackendStatusView {
        try await call(.GET, "/pub/b/\(backend)/status")
    }

    public func terminate(_ backend: BackendID, hard: Bool = false) async throws -> BackendStatusView {
        try await call(.POST, "/ctrl/b/\(backend)/\(hard ? "hard" : "soft")-terminate")
    }

    /// Stops (draining true) or resumes new placements on a drone.
    public func drain(cluster: ClusterName, drone: DroneName, _ draining: Bool = true) async throws {
        let _: Empty = try await call(.POST, "/ctrl/c/\(cluster)/d/\(drone)/\(draining ? "drain" : "undrain")")
    }

    public func clusterState(_ cluster: ClusterName) async throws -> ClusterStateView {
        try await call(.GET, "/ctrl/c/\(cluster)/state")
    }

    public func controllerStatus() async throws -> ControllerStatusView {
        try await call(.GET, "/ctrl/status")
    }

    public func revoke(_ request: RevokeRequest) async throws -> RevokeResponse {
        try await call(.POST, "/ctrl/b/revoke", body: request)
    }

    /// A backend's status events (replayed after `lastEventID`, then live) until it is
    /// terminated, each with its event id.
    public func statusStream(_ backend: BackendID, lastEventID: Int64 = 0) -> AsyncThrowingStream<
        (id: Int64, status: BackendStatusView), any Error
    > {
        AsyncThrowingStream { continuation in
            let task = Task {
                do {
                    var request = HTTPClientRequest(url: url + "/pub/b/\(backend)/status-stream")
                    request.headers.add(name: "Accept", value: "text/event-stream")
                    if lastEventID > 0 { request.headers.add(name: "Last-Event-ID", value: "\(lastEventID)") }
                    let response = try await http.execute(request, timeout: .hours(24))
                    guard response.status == .ok else {
                        let body = try await response.body.collect(upTo: 1 << 20)
                        throw Self.failure(status: Int(response.status.code), body: body)
                    }
                    var pending: [UInt8] = []
                    for try await chunk in response.body {
                        pending += chunk.readableBytesView
                        // Events end with an empty line.
                        while let end = Self.eventEnd(pending) {
                            let event = String(decoding: pending[..<end], as: UTF8.self)
                            pending.removeFirst(end + 2)
                            if let parsed = Self.parse(event) {
                                continuation.yield(parsed)
                                if parsed.status.status == BackendStatus.terminated.description {
                                    continuation.finish()
                                    return
                                }
                            }
                        }
                    }
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }

    /// Follows a backend until it is ready (its status then) or has ended (an error).
    public func waitUntilReady(
        _ backend: BackendID, onStatus: (BackendStatusView) -> Void = { _ in }
    ) async throws -> BackendStatusView {
        for try await (_, status) in statusStream(backend) {
            onStatus(status)
            if status.status == BackendStatus.ready.description { return status }
            if status.status_code >= BackendStatus.terminating.rawValue {
                throw Failure.unexpected(
                    status: 200, body: "backend \(backend) ended before it was ready: \(status.status) (\(status.reason ?? "-"))")
            }
        }
        throw Failure.unexpected(status: 200, body: "the status stream of \(backend) ended early")
    }

    /// True when the controller and its store answer.
    public func health() async -> Bool {
        guard let response = try? await http.execute(HTTPClientRequest(url: url + "/pub/health"), timeout: timeout) else {
            return false
        }
        return response.status == .ok
    }

    // MARK: plumbing

    struct Empty: Codable {}

    func call<Answer: Decodable>(_ method: HTTPMethod, _ path: String, body: (some Encodable)? = Empty?.none)
        async throws -> Answer
    {
        var request = HTTPClientRequest(url: url + path)
        request.method = method
        if let token { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
        if let body {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(bytes: try JSONEncoder().encode(body)))
        }
        let response = try await http.execute(request, timeout: timeout)
        let bytes = try await response.body.collect(upTo: 16 << 20)
        let status = Int(response.status.code)
        guard (200..<300).contains(status) else { throw Self.failure(status: status, body: bytes) }
        if Answer.self == Empty.self, bytes.readableBytes == 0 { return Empty() as! Answer }
        return try JSONDecoder().decode(Answer.self, from: Data(bytes.readableBytesView))
    }

    static func failure(status: Int, body: ByteBuffer) -> Failure {
        if let error = try? JSONDecoder().decode(APIErrorBody.self, from: Data(body.readableBytesView)) {
            return .api(status: status, error: error)
        }
        return .unexpected(status: status, body: String(buffer: body))
    }

    static func eventEnd(_ bytes: [UInt8]) -> Int? {
        guard bytes.count >= 2 else { return nil }
        for index in 0..<(bytes.count - 1) where bytes[index] == 10 && bytes[index + 1] == 10 { return index }
        return nil
    }

    /// One server-sent event: its id and its status (comments and other events: nil).
    static func parse(_ event: String) -> (id: Int64, status: BackendStatusView)? {
        var id: Int64 = 0
        var data = ""
        for line in event.split(separator: "\n") {
            if line.hasPrefix("id: ") { id = Int64(line.dropFirst(4)) ?? 0 }
            if line.hasPrefix("data: ") { data += line.dropFirst(6) }
        }
        guard !data.isEmpty, let status = try? JSONDecoder().decode(BackendStatusView.self, from: Data(data.utf8)) else {
            return nil
        }
        return (id, status)
    }
}
