import HangarCore

/// The controller's source of truth behind one protocol: drones, backends, keys with their
/// leases and fencing tokens, backend status events, the actions sent to drones, and
/// connection tokens. `SQLiteStore` is the embedded engine. Every time the store decides
/// on (a lease's expiry, a heartbeat's freshness) is the store's own clock (`now()`), so
/// that several controllers sharing one database agree.
public protocol ClusterStore: Sendable {
    /// The store's clock: milliseconds since the Unix epoch.
    func now() async throws -> Int64

    /// Registers a drone (or updates it on a reconnect) and counts as a heartbeat.
    func registerDrone(_ drone: DroneRegistration) async throws
    /// A drone's heartbeat, now.
    func heartbeat(_ drone: DroneName) async throws
    /// Stops (or resumes) new placements on a drone; false when there is no such drone.
    func setDraining(_ drone: DroneName, _ draining: Bool) async throws -> Bool
    /// The drones of `cluster` (every cluster when nil), with their load.
    func drones(cluster: ClusterName?) async throws -> [DroneRecord]

    /// The one transaction behind a connect: the key's live backend, or a new backend on a
    /// drone `plan.choose` picks, with its key lease, a new fencing token and a spawn action.
    func connect(_ plan: ConnectPlan) async throws -> ConnectOutcome

    func backend(_ id: BackendID) async throws -> BackendRecord?
    /// Records a status a drone reports. Statuses only move forward: a repeated or older
    /// one changes nothing and returns nil. A terminated backend frees its key.
    func recordStatus(
        _ backend: BackendID, _ status: BackendStatus, reason: TerminationReason?, exitCode: Int32?
    ) async throws -> StatusEvent?
    /// A backend's status events after event `after` (0: all), oldest first.
    func events(of backend: BackendID, after: Int64) async throws -> [StatusEvent]

    /// Extends the leases of the keys held by `drone`'s live backends to now + `seconds`.
    func renewLeases(of drone: DroneName, for seconds: Int) async throws
    /// Frees every key whose lease has expired; its backend, if still live in the store,
    /// is recorded as terminated (reason key-expired). Returns those backends.
    func expireLeases() async throws -> [BackendID]
    /// Records every live backend of `drone` as terminated (reason lost) and frees their keys.
    func markLost(drone: DroneName) async throws -> [BackendID]

    /// Asks `drone` to act on a backend; returns the action's id.
    func enqueueAction(_ kind: DroneAction.Kind, backend: BackendID, drone: DroneName) async throws -> Int64
    /// The actions `drone` has not acknowledged, oldest first (sent again after a reconnect).
    func pendingActions(of drone: DroneName) async throws -> [DroneAction]
    func acknowledgeAction(_ id: Int64, drone: DroneName) async throws

    func insertToken(_ token: TokenRecord) async throws
    /// A token that has not expired.
    func token(_ value: String) async throws -> TokenRecord?
    /// Deletes every token of a backend; returns how many.
    func revokeTokens(of backend: BackendID) async throws -> Int
}

/// A key as a connect names it: unique within its namespace; the tag must match the
/// holder's for a connect to share its backend.
public struct KeyRef: Hashable, Sendable {
    public var namespace: NamespaceName
    public var name: KeyName
    public var tag: String?

    public init(namespace: NamespaceName = .default, name: KeyName, tag: String? = nil) {
        self.namespace = namespace
        self.name = name
        self.tag = tag
    }
}

/// What a drone says about itself when it connects.
public struct DroneRegistration: Sendable, Equatable {
    public var name: DroneName
    public var cluster: ClusterName
    public var pool: PoolName
    public var capacityBackends: Int
    /// Memory its backends may commit in all (their memory limits), in bytes; 0: no budget.
    public var capacityMemory: UInt64

    public init(name: DroneName, cluster: ClusterName, pool: PoolName = .default, capacityBackends: Int, capacityMemory: UInt64) {
        self.name = name
        self.cluster = cluster
        self.pool = pool
        self.capacityBackends = capacityBackends
        self.capacityMemory = capacityMemory
    }
}

/// A drone with its load as the store counts it.
public struct DroneRecord: Sendable, Equatable {
    public var registration: DroneRegistration
    public var draining: Bool
    /// The store's clock at its last heartbeat.
    public var lastHeartbeat: Int64
    /// Its backends that are not terminated.
    public var liveBackends: Int
    /// The memory limits of those backends, in bytes.
    public var committedMemory: UInt64

    public var name: DroneName { registration.name }

    /// How full it is, 0...1 and above: the larger of its backend and memory shares.
    public var load: Double {
        let byCount = Double(liveBackends) / Double(max(1, registration.capacityBackends))
        let byMemory =
            registration.capacityMemory == 0 ? 0 : Double(committedMemory) / Double(registration.capacityMemory)
        return max(byCount, byMemory)
    }
}

public struct BackendRecord: Sendable, Equatable {
    public var id: BackendID
    public var cluster: ClusterName
    public var drone: DroneName
    public var key: KeyRef
    public var status: BackendStatus
    public var reason: TerminationReason?
    public var exitCode: Int32?
    /// The key's fencing token when this backend took it: larger for every new holder.
    public var fencingToken: Int64
    /// Its memory limit, in bytes (counted against the drone's capacity).
    public var memory: UInt64
    /// What to run, as the controller encoded it (opaque to the store).
    public var spawnConfig: String
    public var createdAt: Int64
}

/// One status change of one backend, as stored.
public struct StatusEvent: Sendable, Equatable {
    public var id: Int64
    public var backend: BackendID
    public var status: BackendStatus
    public var reason: TerminationReason?
    public var exitCode: Int32?
    /// The store's clock when it was recorded.
    public var at: Int64
}

/// What a connect asks of the store.
public struct ConnectPlan: Sendable {
    public var key: KeyRef
    public var cluster: ClusterName
    public var pool: PoolName
    /// What to run when the key has no live backend; nil: do not spawn.
    public var spawnConfig: String?
    /// The new backend's memory limit, in bytes.
    public var memory: UInt64
    /// The id a new backend gets.
    public var newBackend: BackendID
    /// How long the new key lease lasts before the drone must renew it.
    public var leaseSeconds: Int
    /// A drone whose last heartbeat is older than this is not a candidate.
    public var heartbeatFreshness: Int64
    /// Picks a drone among the candidates (ready, fresh, not draining, same cluster and pool).
    public var choose: @Sendable ([DroneRecord]) -> DroneName?

    public init(
        key: KeyRef, cluster: ClusterName, pool: PoolName = .default, spawnConfig: String?, memory: UInt64,
        newBackend: BackendID = .random(), leaseSeconds: Int = 30, heartbeatFreshness: Int64 = 15_000,
        choose: @escaping @Sendable ([DroneRecord]) -> DroneName?
    ) {
        self.key = key
        self.cluster = cluster
        self.pool = pool
        self.spawnConfig = spawnConfig
        self.memory = memory
        self.newBackend = newBackend
        self.leaseSeconds = leaseSeconds
        self.heartbeatFreshness = heartbeatFreshness
        self.choose = choose
    }
}

/// How a connect ended in the store.
public enum ConnectOutcome: Sendable, Equatable {
    /// The key's live backend (spawned: false).
    case existing(BackendRecord)
    /// A new backend, and the spawn action for its drone.
    case spawned(BackendRecord, action: Int64)
    /// The key is held by a backend with another tag.
    case keyHeld(tag: String?)
    /// The key has no live backend and the connect gave no spawn config.
    case keyUnheldNoSpawnConfig
    /// The key's backend is terminating: connect again once it has ended (never hand out
    /// a dying backend).
    case terminating(BackendID)
    /// No drone can take it.
    case noDroneAvailable
}

/// Something a drone must do, until it acknowledges it.
public struct DroneAction: Sendable, Equatable {
    public enum Kind: String, Sendable {
        case spawn
        case terminate
        case hardTerminate = "hard-terminate"
    }

    public var id: Int64
    public var drone: DroneName
    public var backend: BackendID
    public var kind: Kind
}

/// A connection token: what the proxy resolves to a backend.
public struct TokenRecord: Sendable, Equatable {
    public var value: String
    public var backend: BackendID
    public var user: String?
    /// The connect's auth object, as JSON, passed to the backend by the proxy.
    public var auth: String
    /// A second secret the backend may check.
    public var secret: String
    /// The store's clock when it stops resolving.
    public var expiresAt: Int64

    public init(value: String, backend: BackendID, user: String?, auth: String, secret: String, expiresAt: Int64) {
        self.value = value
        self.backend = backend
        self.user = user
        self.auth = auth
        self.secret = secret
        self.expiresAt = expiresAt
    }
}
