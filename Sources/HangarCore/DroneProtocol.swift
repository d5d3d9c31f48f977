/// The protocol between a drone and its controller: JSON text messages over one WebSocket
/// that the drone opens (`GET /ctrl/c/:cluster/drone-socket`). Every message is an object
/// with a `type`. Messages that change state carry ids and are acknowledged; what was not
/// acknowledged is sent again after a reconnect, and both sides handle a repeat as a no-op.
///
///     drone                                  controller
///     hello {version, drone, capacity…}  ->
///                                        <-  welcome {version, lease_seconds, heartbeat_ms}
///                                        <-  action {id, kind, backend, spawn?}   (pending ones first)
///     heartbeat {seq, running}           ->  (renews the leases of the drone's keys)
///                                        <-  renewed {seq}
///     events {events: [{id, backend, status…}]} ->
///                                        <-  event-ack {through}
///     action-ack {id}                    ->
public enum DroneProtocol {
    /// This build's version. A drone and a controller talk only when they agree.
    public static let version = 1
}

/// A drone introduces itself.
public struct DroneHello: Codable, Sendable, Equatable {
    public var version: Int
    public var drone: String
    public var pool: String
    public var capacity_backends: Int
    /// Bytes; 0: no memory budget.
    public var capacity_memory: UInt64
    /// Where proxies reach its backends ("address:port"), when it has an ingress port.
    public var ingress: String?
    /// The backends it knows: running, or ended recently (their events may still be on
    /// their way). Any other the controller thinks it runs (past `scheduled`) is lost: a
    /// drone that restarted without its state.
    public var backends: [String]

    public init(
        drone: DroneName, pool: PoolName, capacityBackends: Int, capacityMemory: UInt64, ingress: String?,
        backends: [BackendID] = []
    ) {
        version = DroneProtocol.version
        self.backends = backends.map(\.rawValue)
        self.drone = drone.rawValue
        self.pool = pool.rawValue
        capacity_backends = capacityBackends
        capacity_memory = capacityMemory
        self.ingress = ingress
    }

    /// What is wrong with it, if anything, beyond its names (which their types check):
    /// proxies will dial `ingress`, so it must be an IPv4 address and a port.
    public var problem: String? {
        if capacity_backends < 0 { return "capacity_backends: must not be negative, got \(capacity_backends)" }
        guard let ingress, IPv4Endpoint(ingress) == nil else { return nil }
        return "ingress: expected IPv4-address:port, got \"\(ingress.prefix(64))\""
    }
}

/// The controller accepts a drone, and says how it keeps its leases.
public struct DroneWelcome: Codable, Sendable, Equatable {
    public var version: Int
    /// A renewal holds the drone's keys this long (from when the drone sent the heartbeat,
    /// in its own clock). The drone soft-terminates their backends at 2/3 of it without a
    /// renewal, hard-terminates at 5/6, and the store frees the keys at 1.
    public var lease_seconds: Int
    /// How often the drone sends a heartbeat.
    public var heartbeat_ms: Int

    public init(leaseSeconds: Int, heartbeatMilliseconds: Int) {
        version = DroneProtocol.version
        lease_seconds = leaseSeconds
        heartbeat_ms = heartbeatMilliseconds
    }
}

/// A drone is alive; the controller renews the leases of its keys.
public struct DroneHeartbeat: Codable, Sendable, Equatable {
    public var seq: Int64
    /// Backends running now.
    public var running: Int

    public init(seq: Int64, running: Int) {
        self.seq = seq
        self.running = running
    }
}

/// The leases of heartbeat `seq` were renewed.
public struct LeaseRenewal: Codable, Sendable, Equatable {
    public var seq: Int64
    public init(seq: Int64) { self.seq = seq }
}

/// What a spawn action runs.
public struct SpawnOrder: Codable, Sendable, Equatable {
    public var key: String
    public var namespace: String
    public var executable: Executable
    public var max_idle_seconds: Int?
    public var lifetime_limit_seconds: Int?
    /// The key's fencing token, larger for every new holder of the key.
    public var fencing_token: Int64

    public init(
        key: KeyName, namespace: NamespaceName, executable: Executable, maxIdleSeconds: Int?, lifetimeLimitSeconds: Int?,
        fencingToken: Int64
    ) {
        self.key = key.rawValue
        self.namespace = namespace.rawValue
        self.executable = executable
        max_idle_seconds = maxIdleSeconds
        lifetime_limit_seconds = lifetimeLimitSeconds
        fencing_token = fencingToken
    }
}

/// Something the drone must do, until it acknowledges the id.
public struct ActionOrder: Codable, Sendable, Equatable {
    /// "spawn", "terminate" or "hard-terminate".
    public var kind: String
    public var id: Int64
    public var backend: String
    /// With kind spawn.
    public var spawn: SpawnOrder?

    public init(id: Int64, kind: String, backend: BackendID, spawn: SpawnOrder?) {
        self.id = id
        self.kind = kind
        self.backend = backend.rawValue
        self.spawn = spawn
    }
}

/// The drone took action `id` (or had taken it before).
public struct ActionAck: Codable, Sendable, Equatable {
    public var id: Int64
    public init(id: Int64) { self.id = id }
}

/// A status change of a backend, with the drone's id for the event.
public struct BackendEventReport: Codable, Sendable, Equatable {
    public var id: Int64
    public var backend: String
    public var status: Int
    public var reason: String?
    public var exit_code: Int32?

    public init(id: Int64, backend: BackendID, status: BackendStatus, reason: TerminationReason?, exitCode: Int32?) {
        self.id = id
        self.backend = backend.rawValue
        self.status = status.rawValue
        self.reason = reason?.rawValue
        exit_code = exitCode
    }
}

/// Status changes in order (at most `DroneEvents.limit` per message).
public struct DroneEvents: Codable, Sendable, Equatable {
    public static let limit = 256
    public var events: [BackendEventReport]
    public init(events: [BackendEventReport]) { self.events = events }
}

/// Every event up to and including `through` is recorded.
public struct EventAck: Codable, Sendable, Equatable {
    public var through: Int64
    public init(through: Int64) { self.through = through }
}

/// The controller will not talk to this drone (another version, a bad hello); it closes.
public struct DroneRefusal: Codable, Sendable, Equatable {
    public var message: String
    public init(message: String) { self.message = message }
}

/// A message on the drone socket.
public enum DroneMessage: Codable, Sendable, Equatable {
    case hello(DroneHello)
    case welcome(DroneWelcome)
    case refused(DroneRefusal)
    case heartbeat(DroneHeartbeat)
    case renewed(LeaseRenewal)
    case action(ActionOrder)
    case actionAck(ActionAck)
    case events(DroneEvents)
    case eventAck(EventAck)

    enum TypeKey: String, CodingKey { case type }

    var type: String {
        switch self {
        case .hello: "hello"
        case .welcome: "welcome"
        case .refused: "refused"
        case .heartbeat: "heartbeat"
        case .renewed: "renewed"
        case .action: "action"
        case .actionAck: "action-ack"
        case .events: "events"
        case .eventAck: "event-ack"
        }
    }

    public init(from decoder: any Decoder) throws {
        let type = try decoder.container(keyedBy: TypeKey.self).decode(String.self, forKey: .type)
        switch type {
        case "hello": self = .hello(try DroneHello(from: decoder))
        case "welcome": self = .welcome(try DroneWelcome(from: decoder))
        case "refused": self = .refused(try DroneRefusal(from: decoder))
        case "heartbeat": self = .heartbeat(try DroneHeartbeat(from: decoder))
        case "renewed": self = .renewed(try LeaseRenewal(from: decoder))
        case "action": self = .action(try ActionOrder(from: decoder))
        case "action-ack": self = .actionAck(try ActionAck(from: decoder))
        case "events": self = .events(try DroneEvents(from: decoder))
        case "event-ack": self = .eventAck(try EventAck(from: decoder))
        default:
            throw DecodingError.dataCorrupted(
                .init(codingPath: [TypeKey.type], debugDescription: "type: unknown message type \"\(type.prefix(32))\""))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        switch self {
        case .hello(let body): try body.encode(to: encoder)
        case .welcome(let body): try body.encode(to: encoder)
        case .refused(let body): try body.encode(to: encoder)
        case .heartbeat(let body): try body.encode(to: encoder)
        case .renewed(let body): try body.encode(to: encoder)
        case .action(let body): try body.encode(to: encoder)
        case .actionAck(let body): try body.encode(to: encoder)
        case .events(let body): try body.encode(to: encoder)
        case .eventAck(let body): try body.encode(to: encoder)
        }
        var container = encoder.container(keyedBy: TypeKey.self)
        try container.encode(type, forKey: .type)
    }
}
