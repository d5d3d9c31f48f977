/// The controller's HTTP API as JSON types, shared by the controller and `HangarClient`.
/// Field names are Plane's (snake_case), so Plane's clients and habits carry over. Every
/// request type refuses unknown fields and validates names while decoding, so a bad body
/// is a 400 that names the field.

/// `key` of a connect: which key, in which namespace, with which tag.
public struct KeyConfig: Codable, Sendable, Equatable {
    public var name: KeyName
    public var namespace: NamespaceName
    /// Connects share a backend only when their tags match; a mismatch is KeyHeld.
    public var tag: String?

    public init(name: KeyName, namespace: NamespaceName = .default, tag: String? = nil) {
        self.name = name
        self.namespace = namespace
        self.tag = tag
    }

    enum CodingKeys: String, StrictCodingKey { case name, namespace, tag, unknown = "\u{0}" }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.strictContainer(keyedBy: CodingKeys.self)
        name = try container.validated(.name) { try KeyName($0) }
        namespace = try container.validatedIfPresent(.namespace) { try NamespaceName($0) } ?? .default
        tag = try container.plainText(.tag)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(name.rawValue, forKey: .name)
        if namespace != .default { try container.encode(namespace.rawValue, forKey: .namespace) }
        try container.encodeIfPresent(tag, forKey: .tag)
    }
}

/// Limits a connect asks for, within the image policy's `[limits.max]`.
public struct ExecutableLimits: Codable, Sendable, Equatable {
    /// "512m", "2g": as in a policy file.
    public var memory_max: String?
    public var pids_max: Int?
    /// CPU time in cores.
    public var cpu: Double?

    public init(memory_max: String? = nil, pids_max: Int? = nil, cpu: Double? = nil) {
        self.memory_max = memory_max
        self.pids_max = pids_max
        self.cpu = cpu
    }

    enum CodingKeys: String, StrictCodingKey { case memory_max, pids_max, cpu, unknown = "\u{0}" }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.strictContainer(keyedBy: CodingKeys.self)
        memory_max = try container.decodeIfPresent(String.self, forKey: .memory_max)
        if let memory_max {
            guard let size = try? ByteSize(parsing: memory_max) else {
                throw container.invalid(.memory_max, "expected a size such as 512m or 2g, got \"\(memory_max.prefix(32))\"")
            }
            guard size.bytes <= 1 << 50 else { throw container.invalid(.memory_max, "at most 1 PiB") }
        }
        pids_max = try container.decodeIfPresent(Int.self, forKey: .pids_max)
        if let pids_max, pids_max < 1 { throw container.invalid(.pids_max, "must be at least 1") }
        cpu = try container.decodeIfPresent(Double.self, forKey: .cpu)
        if let cpu, !(cpu > 0 && cpu <= 1024) { throw container.invalid(.cpu, "must be more than 0 cores") }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encodeIfPresent(memory_max, forKey: .memory_max)
        try container.encodeIfPresent(pids_max, forKey: .pids_max)
        try container.encodeIfPresent(cpu, forKey: .cpu)
    }
}

/// What to run: an image (its policy decides the rest), and what a connect may add.
public struct Executable: Codable, Sendable, Equatable {
    public var image: ImageName
    /// The command; nil: the policy's.
    public var command: [String]?
    public var env: [String: String]?
    public var limits: ExecutableLimits?

    public init(image: ImageName, command: [String]? = nil, env: [String: String]? = nil, limits: ExecutableLimits? = nil) {
        self.image = image
        self.command = command
        self.env = env
        self.limits = limits
    }

    enum CodingKeys: String, StrictCodingKey { case image, command, env, limits, unknown = "\u{0}" }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.strictContainer(keyedBy: CodingKeys.self)
        image = try container.validated(.image) { try ImageName($0) }
        command = try container.decodeIfPresent([String].self, forKey: .command)
        if let command, let problem = BackendCommand.problem(command) { throw container.invalid(.command, problem) }
        env = try container.decodeIfPresent([String: String].self, forKey: .env)
        for (name, value) in (env ?? [:]).sorted(by: { $0.key < $1.key }) {
            if let problem = BackendEnvironment.problem(name: name, value: value) { throw container.invalid(.env, problem) }
        }
        limits = try container.decodeIfPresent(ExecutableLimits.self, forKey: .limits)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(image.rawValue, forKey: .image)
        try container.encodeIfPresent(command, forKey: .command)
        try container.encodeIfPresent(env, forKey: .env)
        try container.encodeIfPresent(limits, forKey: .limits)
    }
}

/// `spawn_config` of a connect: how to start a backend when the key has none.
public struct SpawnConfig: Codable, Sendable, Equatable {
    /// The new backend's id; nil: a random one.
    public var id: BackendID?
    /// nil: the controller's default cluster.
    public var cluster: ClusterName?
    public var pool: PoolName
    public var executable: Executable
    public var lifetime_limit_seconds: Int?
    public var max_idle_seconds: Int?
    /// One token for every connect to the backend, valid as long as it lives.
    public var use_static_token: Bool
    /// The URL's host gets this label in front of the cluster's.
    public var subdomain: String?

    public init(
        executable: Executable, cluster: ClusterName? = nil, pool: PoolName = .default, id: BackendID? = nil,
        lifetime_limit_seconds: Int? = nil, max_idle_seconds: Int? = nil, use_static_token: Bool = false,
        subdomain: String? = nil
    ) {
        self.id = id
        self.cluster = cluster
        self.pool = pool
        self.executable = executable
        self.lifetime_limit_seconds = lifetime_limit_seconds
        self.max_idle_seconds = max_idle_seconds
        self.use_static_token = use_static_token
        self.subdomain = subdomain
    }

    enum CodingKeys: String, StrictCodingKey {
        case id, cluster, pool, executable, lifetime_limit_seconds, max_idle_seconds, use_static_token, subdomain
        case unknown = "\u{0}"
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.strictContainer(keyedBy: CodingKeys.self)
        id = try container.validatedIfPresent(.id) { try BackendID($0) }
        cluster = try container.validatedIfPresent(.cluster) { try ClusterName($0) }
        pool = try container.validatedIfPresent(.pool) { try PoolName($0) } ?? .default
        executable = try container.decode(Executable.self, forKey: .executable)
        for key in [CodingKeys.lifetime_limit_seconds, .max_idle_seconds] {
            if let value = try container.decodeIfPresent(Int.self, forKey: key), !(1...(30 * 86400)).contains(value) {
                throw container.invalid(key, "must be 1...2592000 (30 days), got \(value)")
            }
        }
        lifetime_limit_seconds = try container.decodeIfPresent(Int.self, forKey: .lifetime_limit_seconds)
        max_idle_seconds = try container.decodeIfPresent(Int.self, forKey: .max_idle_seconds)
        use_static_token = try container.decodeIfPresent(Bool.self, forKey: .use_static_token) ?? false
        subdomain = try container.decodeIfPresent(String.self, forKey: .subdomain)
        if let subdomain {
            let label = subdomain.unicodeScalars
            let valid =
                (1...63).contains(subdomain.utf8.count)
                && label.allSatisfy { ("a"..."z").contains($0) || ("0"..."9").contains($0) || $0 == "-" }
                && label.first != "-" && label.last != "-"
            if !valid { throw container.invalid(.subdomain, "one DNS label: 1...63 of a-z, 0-9 and '-', not at either end") }
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encodeIfPresent(id?.rawValue, forKey: .id)
        try container.encodeIfPresent(cluster?.rawValue, forKey: .cluster)
        if pool != .default { try container.encode(pool.rawValue, forKey: .pool) }
        try container.encode(executable, forKey: .executable)
        try container.encodeIfPresent(lifetime_limit_seconds, forKey: .lifetime_limit_seconds)
        try container.encodeIfPresent(max_idle_seconds, forKey: .max_idle_seconds)
        if use_static_token { try container.encode(true, forKey: .use_static_token) }
        try container.encodeIfPresent(subdomain, forKey: .subdomain)
    }
}

/// `POST /ctrl/connect`.
public struct ConnectRequest: Codable, Sendable, Equatable {
    /// nil: a key of its own (a backend nobody else can connect to by key).
    public var key: KeyConfig?
    /// nil: connect only to a backend the key already has (KeyUnheldNoSpawnConfig otherwise).
    public var spawn_config: SpawnConfig?
    /// Who connects; the proxy passes it to the backend.
    public var user: String?
    /// Anything the application wants the backend to see, passed on by the proxy.
    public var auth: [String: JSONValue]

    public init(key: KeyConfig?, spawn_config: SpawnConfig?, user: String? = nil, auth: [String: JSONValue] = [:]) {
        self.key = key
        self.spawn_config = spawn_config
        self.user = user
        self.auth = auth
    }

    enum CodingKeys: String, StrictCodingKey { case key, spawn_config, user, auth, unknown = "\u{0}" }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.strictContainer(keyedBy: CodingKeys.self)
        key = try container.decodeIfPresent(KeyConfig.self, forKey: .key)
        spawn_config = try container.decodeIfPresent(SpawnConfig.self, forKey: .spawn_config)
        user = try container.plainText(.user)
        auth = try container.decodeIfPresent([String: JSONValue].self, forKey: .auth) ?? [:]
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encodeIfPresent(key, forKey: .key)
        try container.encodeIfPresent(spawn_config, forKey: .spawn_config)
        try container.encodeIfPresent(user, forKey: .user)
        if !auth.isEmpty { try container.encode(auth, forKey: .auth) }
    }
}

/// The answer to a connect.
public struct ConnectResponse: Codable, Sendable, Equatable {
    public var backend_id: String
    /// True when this connect started the backend; false when the key already had it.
    public var spawned: Bool
    public var status: String
    /// The connection token, the first part of the URL's path.
    public var token: String
    /// Where the client goes: the proxy, with the token.
    public var url: String
    public var subdomain: String?
    /// A second secret the proxy passes to the backend (x-verified-secret).
    public var secret_token: String
    /// The backend's status (GET); `status_url + "-stream"` follows it.
    public var status_url: String
    public var drone: String

    public init(
        backend_id: String, spawned: Bool, status: String, token: String, url: String, subdomain: String?,
        secret_token: String, status_url: String, drone: String
    ) {
        self.backend_id = backend_id
        self.spawned = spawned
        self.status = status
        self.token = token
        self.url = url
        self.subdomain = subdomain
        self.secret_token = secret_token
        self.status_url = status_url
        self.drone = drone
    }
}

/// A backend's status at one moment: one event of the status stream.
public struct BackendStatusView: Codable, Sendable, Equatable {
    public var status: String
    /// The status's order (scheduled 10 … terminated 70), as Plane numbers them.
    public var status_code: Int
    public var reason: String?
    public var exit_code: Int32?
    /// The store's clock, in milliseconds since the epoch.
    public var time: Int64

    public init(status: BackendStatus, reason: TerminationReason?, exitCode: Int32?, time: Int64) {
        self.status = status.description
        status_code = status.rawValue
        self.reason = reason?.rawValue
        exit_code = exitCode
        self.time = time
    }
}

/// `GET /ctrl/c/:cluster/state`: the drones of a cluster and its backends by status.
public struct ClusterStateView: Codable, Sendable, Equatable {
    public struct Drone: Codable, Sendable, Equatable {
        public var name: String
        public var pool: String
        /// Connected now.
        public var connected: Bool
        /// Out of scheduling: drained, or its heartbeat is stale.
        public var draining: Bool
        public var last_heartbeat_ms_ago: Int64
        public var backends: Int
        public var capacity_backends: Int
        public var committed_memory: UInt64
        public var capacity_memory: UInt64
        /// 0...1: the larger of its backend and memory shares.
        public var load: Double

        public init(
            name: String, pool: String, connected: Bool, draining: Bool, last_heartbeat_ms_ago: Int64, backends: Int,
            capacity_backends: Int, committed_memory: UInt64, capacity_memory: UInt64, load: Double
        ) {
            self.name = name
            self.pool = pool
            self.connected = connected
            self.draining = draining
            self.last_heartbeat_ms_ago = last_heartbeat_ms_ago
            self.backends = backends
            self.capacity_backends = capacity_backends
            self.committed_memory = committed_memory
            self.capacity_memory = capacity_memory
            self.load = load
        }
    }

    public var cluster: String
    public var drones: [Drone]
    /// Backends of the cluster per status (terminated ones of the last hour).
    public var backends: [String: Int]

    public init(cluster: String, drones: [Drone], backends: [String: Int]) {
        self.cluster = cluster
        self.drones = drones
        self.backends = backends
    }
}

/// `GET /ctrl/status`.
public struct ControllerStatusView: Codable, Sendable, Equatable {
    public var status: String
    public var version: String
    /// The drone protocol's version.
    public var protocol_version: Int
    public var default_cluster: String

    public init(status: String, version: String, protocol_version: Int, default_cluster: String) {
        self.status = status
        self.version = version
        self.protocol_version = protocol_version
        self.default_cluster = default_cluster
    }
}

/// `POST /ctrl/b/revoke`: every token of a backend, a user's, or one token.
public struct RevokeRequest: Codable, Sendable, Equatable {
    public var backend_id: BackendID
    public var user: String?
    public var token: String?

    public init(backend_id: BackendID, user: String? = nil, token: String? = nil) {
        self.backend_id = backend_id
        self.user = user
        self.token = token
    }

    enum CodingKeys: String, StrictCodingKey { case backend_id, user, token, unknown = "\u{0}" }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.strictContainer(keyedBy: CodingKeys.self)
        backend_id = try container.validated(.backend_id) { try BackendID($0) }
        user = try container.decodeIfPresent(String.self, forKey: .user)
        token = try container.decodeIfPresent(String.self, forKey: .token)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(backend_id.rawValue, forKey: .backend_id)
        try container.encodeIfPresent(user, forKey: .user)
        try container.encodeIfPresent(token, forKey: .token)
    }
}

/// `POST /ctrl/b/revoke`'s answer.
public struct RevokeResponse: Codable, Sendable, Equatable {
    public var revoked: Int
    public init(revoked: Int) { self.revoked = revoked }
}

/// An error of the controller's API: `{id, kind, message}`. `kind` is Plane's name for it
/// where Plane has one (KeyHeld, NoDroneAvailable…), so clients can act on it.
public struct APIErrorBody: Codable, Sendable, Equatable, Error, CustomStringConvertible {
    public var id: String
    public var kind: String
    public var message: String

    public init(id: String, kind: String, message: String) {
        self.id = id
        self.kind = kind
        self.message = message
    }

    public var description: String { "\(kind): \(message) (\(id))" }

    /// A new error id: "err-" and 16 hex digits, to find the error in a log.
    public static func newID() -> String { "err-" + randomHex16() }
}

/// What a request may ask a backend to run: checked where a request comes in (the
/// controller's connect, the drone's admin API and its spawn actions).
public enum BackendCommand {
    /// Why `command` cannot be run, or nil: it must be a non-empty list of arguments
    /// without NUL, the first one non-empty.
    public static func problem(_ command: [String]) -> String? {
        command.isEmpty || command[0].isEmpty || command.contains(where: { $0.utf8.contains(0) })
            ? "a non-empty list of arguments without NUL, the first one non-empty" : nil
    }
}

/// The environment variables the drone sets for every backend, which a request may not
/// replace: PORT, HANGAR_* and Plane's SESSION_BACKEND_*.
public enum BackendEnvironment {
    public static let reserved: Set<String> = [
        "PORT", "SESSION_BACKEND_ID", "SESSION_BACKEND_KEY", "SESSION_BACKEND_FENCING_TOKEN",
    ]

    public static func isReserved(_ name: String) -> Bool { reserved.contains(name) || name.hasPrefix("HANGAR_") }

    /// Why a request may not set `name` to `value`, or nil.
    public static func problem(name: String, value: String) -> String? {
        if name.isEmpty || name.contains("=") || name.utf8.contains(0) || value.utf8.contains(0) {
            return "\(name.debugDescription): a name must be non-empty, without '=' or NUL, and a value without NUL"
        }
        if isReserved(name) { return "\(name): set by the drone for every backend (PORT, HANGAR_*, SESSION_BACKEND_*)" }
        return nil
    }
}

extension KeyedDecodingContainer {
    /// An optional string of at most 255 bytes without control characters (a tag, a user).
    func plainText(_ key: Key) throws -> String? {
        let text = try decodeIfPresent(String.self, forKey: key)
        if let text, text.utf8.count > 255 || text.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7f }) {
            throw invalid(key, "at most 255 bytes without control characters")
        }
        return text
    }

    /// A string field turned into a validated value; its error names the field.
    func validated<T>(_ key: Key, _ make: (String) throws -> T) throws -> T {
        let text = try decode(String.self, forKey: key)
        do {
            return try make(text)
        } catch {
            throw invalid(key, "\(error)")
        }
    }

    func validatedIfPresent<T>(_ key: Key, _ make: (String) throws -> T) throws -> T? {
        guard let text = try decodeIfPresent(String.self, forKey: key) else { return nil }
        do {
            return try make(text)
        } catch {
            throw invalid(key, "\(error)")
        }
    }

    /// The error for a field whose value is wrong, with its whole path.
    func invalid(_ key: Key, _ why: String) -> DecodingError {
        let path = (codingPath + [key]).map(\.stringValue).joined(separator: ".")
        return DecodingError.dataCorruptedError(forKey: key, in: self, debugDescription: "\(path): \(why)")
    }
}
