import HangarCore

/// The controller's source of truth behind one protocol: drones, backends, keys with their
/// leases and fencing tokens, backend status events, the actions sent to drones, access
/// grants (who may reach a backend; the controller signs connection tokens that name one)
/// and revoked tokens. `SQLiteStore` is the embedded engine. Every time the store decides
/// on (a lease's expiry, a heartbeat's freshness) is the store's own clock (`now()`), so
/// that several controllers sharing one database agree.
public protocol ClusterStore: Sendable {
    /// The store's clock: milliseconds since the Unix epoch.
    func now() async throws -> Int64

    /// Registers a drone (or updates it on a reconnect) and counts as a heartbeat.
    func registerDrone(_ drone: DroneRegistration) async throws
    /// A drone's heartbeat, now, which renews the leases of the keys its live backends hold
    /// to now + `seconds` in the same transaction (so a lease never outlives the last
    /// heartbeat by more than that). False when there is no such drone.
    func heartbeat(_ drone: DroneName, renewingLeasesFor seconds: Int) async throws -> Bool
    /// Stops (or resumes) new placements on a drone; false when there is no such drone.
    func setDraining(_ drone: DroneName, _ draining: Bool) async throws -> Bool
    /// The drones of `cluster` (every cluster when nil), with their load.
    func drones(cluster: ClusterName?) async throws -> [DroneRecord]
    /// One drone, with its load.
    func drone(_ name: DroneName) async throws -> DroneRecord?

    /// The transaction behind connects, plan by plan in order: the key's live backend, or a
    /// new backend on a drone `plan.choose` picks, with its key lease, a new fencing token
    /// and a spawn action; and the grant of the connect's user. Several concurrent connects
    /// share one transaction (one commit), each with its own outcome.
    func connect(_ plans: [ConnectPlan]) async throws -> [Result<ConnectOutcome, any Error>]
    /// A connect that needs no write — the key's live backend, its lease not run out, and a
    /// grant it already has for the connect's user — answered without a transaction where
    /// the store can (exactly as `connect` would); nil: call `connect`.
    func connectWithoutWriting(_ plan: ConnectPlan) -> ConnectOutcome?

    func backend(_ id: BackendID) async throws -> BackendRecord?
    /// Asks a live backend to end (reason external): records terminating (or
    /// hard-terminating) at once, so no connect hands it out again, and queues the action
    /// for its drone, in one transaction. Nil when there is no such backend or it has
    /// ended or is already past that point.
    func requestTermination(_ backend: BackendID, hard: Bool) async throws -> (BackendRecord, DroneAction, StatusEvent)?
    /// Records the status changes a drone reports, in order, in one transaction. Statuses
    /// only move forward: a repeated or older one changes nothing; a change of a backend
    /// that is not that drone's is ignored; a terminated backend frees its key and its
    /// pending actions are done. Returns the events made.
    func recordStatuses(_ changes: [StatusChange], from drone: DroneName) async throws -> [StatusEvent]
    /// A backend's status events after event `after` (0: all), oldest first.
    func events(of backend: BackendID, after: Int64) async throws -> [StatusEvent]

    /// Backends of `cluster` by status: the live ones, and those terminated in the last
    /// `recentMilliseconds`.
    func backendCounts(cluster: ClusterName, recentMilliseconds: Int64) async throws -> [BackendStatus: Int]
    /// Frees every key whose lease has expired; its backend, if still live in the store,
    /// is recorded as terminated (reason key-expired). Returns their events.
    func expireLeases() async throws -> [StatusEvent]
    /// Records the live backends of `drone` that are past `scheduled` and not in `known`
    /// as terminated (reason lost): the drone says it has never heard of them. Returns
    /// their events.
    func markLost(drone: DroneName, except known: Set<BackendID>) async throws -> [StatusEvent]
    /// Records the live backends of every drone whose last heartbeat is older than
    /// `milliseconds` as terminated (reason lost) and frees their keys. Returns their events.
    func markLost(silentFor milliseconds: Int64) async throws -> [StatusEvent]

    /// The actions `drone` has not acknowledged, oldest first (sent again after a reconnect).
    func pendingActions(of drone: DroneName) async throws -> [DroneAction]
    /// Marks actions of `drone` as done (a repeat is harmless), in one transaction.
    func acknowledgeActions(_ ids: [Int64], drone: DroneName) async throws

    /// The key connection tokens are signed with: 32 random bytes, made at the first call
    /// and the same ever after (tokens outlive a restart).
    func tokenKey() async throws -> [UInt8]
    /// A grant that exists, by id (a dynamic token names one) or by static token.
    func grant(_ id: Int64) async throws -> AccessGrant?
    func grant(staticToken: String) async throws -> AccessGrant?
    /// Deletes grants of a backend — all, a user's, or one — so that no token naming one
    /// resolves again; returns their ids.
    func revokeGrants(of backend: BackendID, user: String?, id: Int64?) async throws -> [Int64]
    /// Refuses one token until it would have expired anyway; false when it already was.
    func revokeToken(_ value: String, expiresAt: Int64) async throws -> Bool
    func isRevoked(_ token: String) async throws -> Bool
    /// Deletes up to `limit` revocations of tokens that have expired since; returns how many.
    func deleteExpiredRevocations(limit: Int) async throws -> Int
}

extension ClusterStore {
    /// One connect in a transaction of its own.
    public func connect(_ plan: ConnectPlan) async throws -> ConnectOutcome {
        try await connect([plan])[0].get()
    }

    /// No connect is answered without a transaction.
    public func connectWithoutWriting(_ plan: ConnectPlan) -> ConnectOutcome? { nil }
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
    /// Where proxies reach its backends ("address:port"); nil: no ingress port.
    public var ingress: String?

    public init(
        name: DroneName, cluster: ClusterName, pool: PoolName = .default, capacityBackends: Int, capacityMemory: UInt64,
        ingress: String? = nil
    ) {
        self.name = name
        self.cluster = cluster
        self.pool = pool
        self.capacityBackends = capacityBackends
        self.capacityMemory = capacityMemory
        self.ingress = ingress
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
    /// The label its URL's host starts with, if the connect that spawned it chose one.
    public var subdomain: String?
}

/// A status a drone reports for a backend.
public struct StatusChange: Sendable, Equatable {
    public var backend: BackendID
    public var status: BackendStatus
    public var reason: TerminationReason?
    public var exitCode: Int32?

    public init(backend: BackendID, status: BackendStatus, reason: TerminationReason?, exitCode: Int32?) {
        self.backend = backend
        self.status = status
        self.reason = reason
        self.exitCode = exitCode
    }
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
    /// The grant of the connect's user, found or made; nil: none.
    public var grant: GrantRequest?
    /// The new backend's subdomain.
    public var subdomain: String?
    /// The new backend's id was chosen by the client: refuse it if taken.
    public var clientChoseID = false

    public init(
        key: KeyRef, cluster: ClusterName, pool: PoolName = .default, spawnConfig: String?, memory: UInt64,
        newBackend: BackendID = .random(), leaseSeconds: Int = 30, heartbeatFreshness: Int64 = 6_000,
        grant: GrantRequest? = nil, choose: @escaping @Sendable ([DroneRecord]) -> DroneName?
    ) {
        self.grant = grant
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

/// Who connects: a connect's user and auth object. A backend spawned with a static token
/// gives its grant that token, and every later connect gets it.
public struct GrantRequest: Sendable, Equatable {
    public var user: String?
    /// The connect's auth object, as JSON.
    public var auth: String
    /// The static token a spawn gives its backend (Plane's use_static_token); only a spawn
    /// makes one.
    public var staticToken: String?

    public init(user: String?, auth: String, staticToken: String? = nil) {
        self.user = user
        self.auth = auth
        self.staticToken = staticToken
    }
}

/// How a connect ended in the store.
public enum ConnectOutcome: Sendable, Equatable {
    /// The key's live backend (spawned: false), and the connect's grant.
    case existing(BackendRecord, grant: AccessGrant?)
    /// A new backend, the spawn action for its drone, and the connect's grant.
    case spawned(BackendRecord, action: Int64, grant: AccessGrant?)
    /// The client chose the new backend's id, and a backend has it.
    case backendIDTaken(BackendID)
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

/// Access to a backend for one user (and auth object): what a connection token names.
/// Tokens are signed by the controller and not stored, so a connect to a key that has its
/// backend and its user's grant writes nothing; revoking deletes grants.
public struct AccessGrant: Sendable, Equatable {
    /// Never reused: a deleted grant's tokens never name another.
    public var id: Int64
    public var backend: BackendID
    public var user: String?
    /// The connect's auth object, as JSON, passed to the backend by the proxy.
    public var auth: String
    /// The backend's one token for every connect, as long as it lives; nil: tokens are
    /// signed per connect.
    public var staticToken: String?

    public init(id: Int64, backend: BackendID, user: String?, auth: String, staticToken: String? = nil) {
        self.id = id
        self.backend = backend
        self.user = user
        self.auth = auth
        self.staticToken = staticToken
    }
}
