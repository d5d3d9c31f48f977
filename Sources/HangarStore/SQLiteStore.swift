import FoundationEssentials
import GRDB
import Glibc
import HangarCore

/// The embedded store: SQLite through GRDB (the system libsqlite3), in WAL mode. Every
/// write is one serialized transaction, so the check and the claim of a key cannot
/// interleave; the primary key of `key_lease` is the last word on one holder per key.
/// Its clock is SQLite's own (`now()`), the system's real-time clock.
///
/// One process at a time has a database file open (a lock file next to it says which),
/// so that the live keys it keeps in memory (`LiveKeys`) are exact: a connect to a key
/// that has its backend and its user's grant needs no transaction.
public final class SQLiteStore: ClusterStore {
    let database: any DatabaseWriter
    let live = LiveKeys()
    /// The lock on the database file, held as long as this store lives; nil in memory.
    private let lock: LockFile?

    /// Opens (creating and migrating) the database at `path`; ":memory:" for one that
    /// lives as long as this object. Another process (or store) that has it open is an
    /// error that says so.
    public init(path: String) throws {
        var configuration = Configuration()
        configuration.foreignKeysEnabled = true
        configuration.busyMode = .timeout(5)
        configuration.prepareDatabase { db in try db.execute(sql: "PRAGMA synchronous = NORMAL") }
        lock = path == ":memory:" ? nil : try LockFile(path + "-lock")
        database =
            path == ":memory:"
            ? try DatabaseQueue(configuration: configuration) : try DatabasePool(path: path, configuration: configuration)
        try Self.migrator.migrate(database)
        live.apply(try database.read(Self.liveKeys))
    }

    /// The live keys as the database has them, with their grants: what `LiveKeys` starts from.
    static func liveKeys(_ db: Database) throws -> [LiveKeys.Change] {
        let terminated = BackendStatus.terminated.rawValue
        var changes: [LiveKeys.Change] = try Row.fetchAll(
            db,
            sql: """
                SELECT b.*, k.expires_at AS lease_expires_at FROM key_lease k JOIN backend b ON b.id = k.backend
                WHERE b.status < ?
                """, arguments: [terminated]
        ).map { row in .held(try backend(row), leaseExpiresAt: row["lease_expires_at"] ?? 0) }
        changes += try Row.fetchAll(
            db, sql: "SELECT g.* FROM access_grant g JOIN backend b ON b.id = g.backend WHERE b.status < ?",
            arguments: [terminated]
        ).map { .granted(try grant($0)) }
        return changes
    }

    /// Runs a write transaction; what it changed of the live keys reaches `live` once it
    /// has committed (and never if it rolls back).
    private func write<T: Sendable>(_ body: @escaping @Sendable (Database, inout [LiveKeys.Change]) throws -> T)
        async throws -> T
    {
        try await database.write { [live] db in
            var changes: [LiveKeys.Change] = []
            let result = try body(db, &changes)
            if !changes.isEmpty {
                let committed = changes
                db.afterNextTransaction { _ in live.apply(committed) }
            }
            return result
        }
    }

    /// The schema, one migration per version; a migration, once released, never changes.
    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("1: drones, backends, keys, events, actions, tokens") { db in
            try db.execute(
                sql: """
                    CREATE TABLE drone (
                        name TEXT PRIMARY KEY, cluster TEXT NOT NULL, pool TEXT NOT NULL,
                        draining INTEGER NOT NULL DEFAULT 0, last_heartbeat INTEGER NOT NULL,
                        capacity_backends INTEGER NOT NULL, capacity_memory INTEGER NOT NULL);
                    CREATE TABLE backend (
                        id TEXT PRIMARY KEY, cluster TEXT NOT NULL, drone TEXT NOT NULL REFERENCES drone(name),
                        key_namespace TEXT NOT NULL, key_name TEXT NOT NULL, key_tag TEXT,
                        status INTEGER NOT NULL, reason TEXT, exit_code INTEGER,
                        fencing_token INTEGER NOT NULL, memory INTEGER NOT NULL, spawn_config TEXT NOT NULL,
                        created_at INTEGER NOT NULL);
                    CREATE INDEX backend_drone_status ON backend(drone, status);
                    CREATE TABLE key_lease (
                        namespace TEXT NOT NULL, name TEXT NOT NULL, backend TEXT REFERENCES backend(id),
                        tag TEXT, fencing_token INTEGER NOT NULL, expires_at INTEGER,
                        PRIMARY KEY (namespace, name));
                    CREATE UNIQUE INDEX key_lease_backend ON key_lease(backend);
                    CREATE TABLE backend_event (
                        id INTEGER PRIMARY KEY AUTOINCREMENT, backend TEXT NOT NULL REFERENCES backend(id),
                        status INTEGER NOT NULL, reason TEXT, exit_code INTEGER, at INTEGER NOT NULL,
                        UNIQUE (backend, status));
                    CREATE TABLE drone_action (
                        id INTEGER PRIMARY KEY AUTOINCREMENT, drone TEXT NOT NULL REFERENCES drone(name),
                        backend TEXT NOT NULL REFERENCES backend(id), kind TEXT NOT NULL,
                        acked INTEGER NOT NULL DEFAULT 0, created_at INTEGER NOT NULL);
                    CREATE INDEX drone_action_pending ON drone_action(drone, acked);
                    CREATE TABLE token (
                        value TEXT PRIMARY KEY, backend TEXT NOT NULL REFERENCES backend(id), user TEXT,
                        auth TEXT NOT NULL, secret TEXT NOT NULL, expires_at INTEGER NOT NULL);
                    CREATE INDEX token_backend ON token(backend);
                    """)
        }
        migrator.registerMigration("2: drone ingress, static tokens") { db in
            try db.execute(
                sql: """
                    ALTER TABLE drone ADD COLUMN ingress TEXT;
                    ALTER TABLE token ADD COLUMN is_static INTEGER NOT NULL DEFAULT 0;
                    CREATE INDEX backend_cluster_status ON backend(cluster, status);
                    """)
        }
        migrator.registerMigration("3: drone load counters") { db in
            try db.execute(
                sql: """
                    ALTER TABLE drone ADD COLUMN live_backends INTEGER NOT NULL DEFAULT 0;
                    ALTER TABLE drone ADD COLUMN committed_memory INTEGER NOT NULL DEFAULT 0;
                    UPDATE drone SET
                        live_backends = (SELECT COUNT(*) FROM backend b WHERE b.drone = drone.name AND b.status < 70),
                        committed_memory = (SELECT COALESCE(SUM(b.memory), 0) FROM backend b
                            WHERE b.drone = drone.name AND b.status < 70);
                    """)
        }
        migrator.registerMigration("4: indexes of the sweeps and of tokens") { db in
            // A backend's static token without a scan of all its tokens; expired tokens
            // found by the sweep without a scan of the table.
            try db.execute(
                sql: """
                    CREATE INDEX token_static ON token(backend) WHERE is_static = 1;
                    CREATE INDEX token_expiry ON token(expires_at);
                    CREATE INDEX key_lease_expiry ON key_lease(expires_at) WHERE backend IS NOT NULL;
                    CREATE INDEX backend_event_status_at ON backend_event(status, at);
                    """)
        }
        migrator.registerMigration("5: access grants instead of stored tokens, revoked tokens, settings") { db in
            // Connection tokens are signed by the controller and name a grant; what was a
            // static token becomes its backend's static grant. Other stored tokens stop
            // resolving (their clients connect again).
            try db.execute(
                sql: """
                    ALTER TABLE backend ADD COLUMN subdomain TEXT;
                    UPDATE backend SET subdomain = json_extract(spawn_config, '$.subdomain') WHERE json_valid(spawn_config);
                    CREATE TABLE access_grant (
                        id INTEGER PRIMARY KEY AUTOINCREMENT, backend TEXT NOT NULL REFERENCES backend(id),
                        user TEXT, auth TEXT NOT NULL, static_token TEXT UNIQUE);
                    CREATE INDEX access_grant_backend ON access_grant(backend, user);
                    INSERT INTO access_grant (backend, user, auth, static_token)
                        SELECT t.backend, t.user, t.auth, t.value FROM token t JOIN backend b ON b.id = t.backend
                        WHERE t.is_static = 1 AND b.status < 70;
                    DROP TABLE token;
                    CREATE TABLE revoked_token (value TEXT PRIMARY KEY, expires_at INTEGER NOT NULL);
                    CREATE INDEX revoked_token_expiry ON revoked_token(expires_at);
                    CREATE TABLE setting (name TEXT PRIMARY KEY, value BLOB NOT NULL);
                    """)
        }
        return migrator
    }

    /// SQLite's clock in milliseconds.
    static func clock(_ db: Database) throws -> Int64 {
        try Int64.fetchOne(db.cachedStatement(sql: "SELECT CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)")) ?? 0
    }

    public func now() async throws -> Int64 {
        try await database.read { try Self.clock($0) }
    }

    // MARK: drones

    public func registerDrone(_ drone: DroneRegistration) async throws {
        try await database.write { db in
            try db.execute(
                sql: """
                    INSERT INTO drone (name, cluster, pool, last_heartbeat, capacity_backends, capacity_memory, ingress)
                    VALUES (?, ?, ?, ?, ?, ?, ?)
                    ON CONFLICT(name) DO UPDATE SET cluster = excluded.cluster, pool = excluded.pool,
                        last_heartbeat = excluded.last_heartbeat, capacity_backends = excluded.capacity_backends,
                        capacity_memory = excluded.capacity_memory, ingress = excluded.ingress
                    """,
                arguments: [
                    drone.name.rawValue, drone.cluster.rawValue, drone.pool.rawValue, try Self.clock(db),
                    drone.capacityBackends, Int64(bitPattern: drone.capacityMemory), drone.ingress,
                ])
        }
    }

    public func heartbeat(_ drone: DroneName, renewingLeasesFor seconds: Int) async throws -> Bool {
        try await write { db, changes in
            let now = try Self.clock(db)
            try db.execute(sql: "UPDATE drone SET last_heartbeat = ? WHERE name = ?", arguments: [now, drone.rawValue])
            guard db.changesCount > 0 else { return false }
            let until = now + Int64(seconds) * 1000
            try db.execute(
                sql: """
                    UPDATE key_lease SET expires_at = ? WHERE backend IN
                        (SELECT id FROM backend WHERE drone = ? AND status < ?)
                    """,
                arguments: [until, drone.rawValue, BackendStatus.terminated.rawValue])
            changes.append(.renewed(drone, until: until))
            return true
        }
    }

    public func setDraining(_ drone: DroneName, _ draining: Bool) async throws -> Bool {
        try await database.write { db in
            try db.execute(sql: "UPDATE drone SET draining = ? WHERE name = ?", arguments: [draining, drone.rawValue])
            return db.changesCount > 0
        }
    }

    public func drones(cluster: ClusterName?) async throws -> [DroneRecord] {
        try await database.read { db in try Self.drones(db, cluster: cluster) }
    }

    /// The drones with their load, which the drone row keeps up to date (a spawn adds to
    /// it, a backend's end takes away): no scan of the backends per connect.
    public func drone(_ name: DroneName) async throws -> DroneRecord? {
        try await database.read { db in try Self.drones(db, name: name).first }
    }

    static func drones(_ db: Database, cluster: ClusterName? = nil, pool: PoolName? = nil, name: DroneName? = nil) throws
        -> [DroneRecord]
    {
        var sql = "SELECT * FROM drone d"
        var conditions: [String] = []
        var arguments: StatementArguments = []
        if let cluster {
            conditions.append("d.cluster = ?")
            _ = arguments.append(contentsOf: [cluster.rawValue])
        }
        if let pool {
            conditions.append("d.pool = ?")
            _ = arguments.append(contentsOf: [pool.rawValue])
        }
        if let name {
            conditions.append("d.name = ?")
            _ = arguments.append(contentsOf: [name.rawValue])
        }
        if !conditions.isEmpty { sql += " WHERE " + conditions.joined(separator: " AND ") }
        sql += " ORDER BY d.name"
        return try Row.fetchAll(db.cachedStatement(sql: sql), arguments: arguments).map { row in
            DroneRecord(
                registration: DroneRegistration(
                    name: try DroneName(row["name"]), cluster: try ClusterName(row["cluster"]),
                    pool: try PoolName(row["pool"]), capacityBackends: row["capacity_backends"],
                    capacityMemory: UInt64(bitPattern: row["capacity_memory"]), ingress: row["ingress"]),
                draining: row["draining"], lastHeartbeat: row["last_heartbeat"], liveBackends: row["live_backends"],
                committedMemory: UInt64(bitPattern: row["committed_memory"]))
        }
    }

    // MARK: connect

    public func connect(_ plans: [ConnectPlan]) async throws -> [Result<ConnectOutcome, any Error>] {
        // The whole batch in one transaction; should any plan fail (a store error), each is
        // done again in a transaction of its own, so that one failure fails one connect.
        do {
            return try await write { db, changes in
                let now = try Self.clock(db)
                return try plans.map { .success(try Self.connect(db, $0, now: now, changes: &changes)) }
            }
        } catch {
            guard plans.count > 1 else { return [.failure(error)] }
            var results: [Result<ConnectOutcome, any Error>] = []
            for plan in plans {
                do {
                    results.append(
                        .success(
                            try await write { db, changes in
                                try Self.connect(db, plan, now: try Self.clock(db), changes: &changes)
                            }))
                } catch {
                    results.append(.failure(error))
                }
            }
            return results
        }
    }

    public func connectWithoutWriting(_ plan: ConnectPlan) -> ConnectOutcome? {
        live.answer(plan, now: wallClockMilliseconds())
    }

    static func connect(_ db: Database, _ plan: ConnectPlan, now: Int64, changes: inout [LiveKeys.Change]) throws
        -> ConnectOutcome
    {
        let key = plan.key
        var fencingToken: Int64 = 1
        if let lease = try Row.fetchOne(
            db.cachedStatement(sql: "SELECT * FROM key_lease WHERE namespace = ? AND name = ?"),
            arguments: [key.namespace.rawValue, key.name.rawValue])
        {
            fencingToken = (lease["fencing_token"] as Int64) + 1
            if let holder = (lease["backend"] as String?).flatMap({ try? BackendID($0) }),
                let backend = try Self.backend(db, holder), backend.status < .terminated
            {
                let expiresAt: Int64? = lease["expires_at"]
                if let expiresAt, expiresAt <= now {
                    // Its drone stopped renewing: the sweep ends it within a second (and
                    // tells its followers); the connect waits for that like for any end.
                    return .terminating(backend.id)
                } else if backend.status >= .terminating {
                    return .terminating(backend.id)
                } else if lease["tag"] as String? != key.tag {
                    return .keyHeld(tag: lease["tag"])
                } else {
                    let grant = try plan.grant.map { try grantFor(db, $0, backend: backend.id, spawning: false, changes: &changes) }
                    return .existing(backend, grant: grant)
                }
            }
        }
        guard let spawnConfig = plan.spawnConfig else { return .keyUnheldNoSpawnConfig }
        if plan.clientChoseID, try Self.backend(db, plan.newBackend) != nil { return .backendIDTaken(plan.newBackend) }
        let candidates = try Self.drones(db, cluster: plan.cluster, pool: plan.pool).filter {
            !$0.draining && now - $0.lastHeartbeat <= plan.heartbeatFreshness
        }
        guard let drone = plan.choose(candidates), candidates.contains(where: { $0.name == drone }) else {
            return .noDroneAvailable
        }
        let backend = BackendRecord(
            id: plan.newBackend, cluster: plan.cluster, drone: drone, key: key, status: .scheduled, reason: nil,
            exitCode: nil, fencingToken: fencingToken, memory: plan.memory, spawnConfig: spawnConfig, createdAt: now,
            subdomain: plan.subdomain)
        try db.cachedStatement(
            sql: """
                INSERT INTO backend (id, cluster, drone, key_namespace, key_name, key_tag, status, fencing_token,
                    memory, spawn_config, created_at, subdomain)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """
        ).execute(
            arguments: [
                backend.id.rawValue, plan.cluster.rawValue, drone.rawValue, key.namespace.rawValue, key.name.rawValue,
                key.tag, BackendStatus.scheduled.rawValue, fencingToken, Int64(bitPattern: plan.memory), spawnConfig,
                now, plan.subdomain,
            ])
        let leaseExpiresAt = now + Int64(plan.leaseSeconds) * 1000
        try db.cachedStatement(
            sql: """
                INSERT INTO key_lease (namespace, name, backend, tag, fencing_token, expires_at)
                VALUES (?, ?, ?, ?, ?, ?)
                ON CONFLICT(namespace, name) DO UPDATE SET backend = excluded.backend, tag = excluded.tag,
                    fencing_token = excluded.fencing_token, expires_at = excluded.expires_at
                """
        ).execute(
            arguments: [key.namespace.rawValue, key.name.rawValue, backend.id.rawValue, key.tag, fencingToken, leaseExpiresAt])
        try db.cachedStatement(
            sql: "UPDATE drone SET live_backends = live_backends + 1, committed_memory = committed_memory + ? WHERE name = ?"
        ).execute(arguments: [Int64(bitPattern: plan.memory), drone.rawValue])
        _ = try Self.insertEvent(db, backend.id, .scheduled, reason: nil, exitCode: nil, at: now)
        let action = try Self.insertAction(db, .spawn, backend: backend.id, drone: drone, at: now)
        changes.append(.held(backend, leaseExpiresAt: leaseExpiresAt))
        let grant = try plan.grant.map { try grantFor(db, $0, backend: backend.id, spawning: true, changes: &changes) }
        return .spawned(backend, action: action, grant: grant)
    }

    /// The grant a connect gets: the backend's static grant when it has one (a spawn with
    /// a static token makes it), else the one of the connect's user and auth, made if new.
    static func grantFor(
        _ db: Database, _ request: GrantRequest, backend: BackendID, spawning: Bool, changes: inout [LiveKeys.Change]
    ) throws -> AccessGrant {
        if !spawning {
            if let row = try Row.fetchOne(
                db.cachedStatement(sql: "SELECT * FROM access_grant WHERE backend = ? AND static_token IS NOT NULL"),
                arguments: [backend.rawValue])
            {
                return try grant(row)
            }
            if let row = try Row.fetchOne(
                db.cachedStatement(
                    sql: "SELECT * FROM access_grant WHERE backend = ? AND user IS ? AND auth = ? AND static_token IS NULL"),
                arguments: [backend.rawValue, request.user, request.auth])
            {
                return try grant(row)
            }
        }
        let staticToken = spawning ? request.staticToken : nil
        try db.cachedStatement(sql: "INSERT INTO access_grant (backend, user, auth, static_token) VALUES (?, ?, ?, ?)")
            .execute(arguments: [backend.rawValue, request.user, request.auth, staticToken])
        let grant = AccessGrant(
            id: db.lastInsertedRowID, backend: backend, user: request.user, auth: request.auth, staticToken: staticToken)
        changes.append(.granted(grant))
        return grant
    }

    // MARK: backends and events

    public func backend(_ id: BackendID) async throws -> BackendRecord? {
        try await database.read { db in try Self.backend(db, id) }
    }

    static func backend(_ db: Database, _ id: BackendID) throws -> BackendRecord? {
        try Row.fetchOne(db.cachedStatement(sql: "SELECT * FROM backend WHERE id = ?"), arguments: [id.rawValue])
            .map(backend)
    }

    static func backend(_ row: Row) throws -> BackendRecord {
        BackendRecord(
            id: try BackendID(row["id"]), cluster: try ClusterName(row["cluster"]), drone: try DroneName(row["drone"]),
            key: KeyRef(
                namespace: try NamespaceName(row["key_namespace"]), name: try KeyName(row["key_name"]),
                tag: row["key_tag"]),
            status: BackendStatus(rawValue: row["status"]) ?? .terminated,
            reason: (row["reason"] as String?).flatMap(TerminationReason.init(rawValue:)), exitCode: row["exit_code"],
            fencingToken: row["fencing_token"], memory: UInt64(bitPattern: row["memory"]),
            spawnConfig: row["spawn_config"], createdAt: row["created_at"], subdomain: row["subdomain"])
    }

    public func recordStatuses(_ changes: [StatusChange], from drone: DroneName) async throws -> [StatusEvent] {
        try await write { db, live in
            let now = try Self.clock(db)
            return try changes.compactMap { change in
                guard let current = try Self.backend(db, change.backend), current.drone == drone,
                    change.status > current.status
                else { return nil }
                return try Self.advance(
                    db, change.backend, to: change.status, reason: change.reason, exitCode: change.exitCode, at: now,
                    changes: &live)
            }
        }
    }

    /// Moves a backend forward, records the event, and once terminated frees its key and
    /// deletes its grants.
    static func advance(
        _ db: Database, _ backend: BackendID, to status: BackendStatus, reason: TerminationReason?, exitCode: Int32?,
        at now: Int64, changes: inout [LiveKeys.Change]
    ) throws -> StatusEvent {
        changes.append(.advanced(backend, status, reason: reason))
        try db.execute(
            sql: "UPDATE backend SET status = ?, reason = COALESCE(?, reason), exit_code = COALESCE(?, exit_code) WHERE id = ?",
            arguments: [status.rawValue, reason?.rawValue, exitCode, backend.rawValue])
        if status == .terminated {
            // Statuses only move forward: a backend reaches terminated once.
            try db.cachedStatement(
                sql: "UPDATE key_lease SET backend = NULL, expires_at = NULL WHERE backend = ?"
            ).execute(arguments: [backend.rawValue])
            // Nothing is left to do for it: a spawn sent again later must not start it.
            try db.cachedStatement(sql: "UPDATE drone_action SET acked = 1 WHERE backend = ? AND acked = 0")
                .execute(arguments: [backend.rawValue])
            try db.cachedStatement(
                sql: """
                    UPDATE drone SET live_backends = live_backends - 1,
                        committed_memory = committed_memory - (SELECT memory FROM backend WHERE id = ?)
                    WHERE name = (SELECT drone FROM backend WHERE id = ?)
                    """
            ).execute(arguments: [backend.rawValue, backend.rawValue])
            // No token of it resolves any more.
            try db.cachedStatement(sql: "DELETE FROM access_grant WHERE backend = ?").execute(arguments: [backend.rawValue])
        }
        return try insertEvent(db, backend, status, reason: reason, exitCode: exitCode, at: now)
    }

    /// Ends a backend in the store alone (its drone is gone or out of reach).
    static func end(
        _ db: Database, _ backend: BackendID, reason: TerminationReason, at now: Int64, changes: inout [LiveKeys.Change]
    ) throws -> StatusEvent {
        try advance(db, backend, to: .terminated, reason: reason, exitCode: nil, at: now, changes: &changes)
    }

    static func insertEvent(
        _ db: Database, _ backend: BackendID, _ status: BackendStatus, reason: TerminationReason?, exitCode: Int32?,
        at now: Int64
    ) throws -> StatusEvent {
        try db.cachedStatement(sql: "INSERT INTO backend_event (backend, status, reason, exit_code, at) VALUES (?, ?, ?, ?, ?)")
            .execute(arguments: [backend.rawValue, status.rawValue, reason?.rawValue, exitCode, now])
        return StatusEvent(
            id: db.lastInsertedRowID, backend: backend, status: status, reason: reason, exitCode: exitCode, at: now)
    }

    public func requestTermination(_ backend: BackendID, hard: Bool) async throws
        -> (BackendRecord, DroneAction, StatusEvent)?
    {
        try await write { db, changes in
            let status: BackendStatus = hard ? .hardTerminating : .terminating
            guard var record = try Self.backend(db, backend), record.status < status else { return nil }
            let now = try Self.clock(db)
            let event = try Self.advance(db, backend, to: status, reason: .external, exitCode: nil, at: now, changes: &changes)
            let kind: DroneAction.Kind = hard ? .hardTerminate : .terminate
            let id = try Self.insertAction(db, kind, backend: backend, drone: record.drone, at: now)
            record.status = status
            record.reason = .external
            return (record, DroneAction(id: id, drone: record.drone, backend: backend, kind: kind), event)
        }
    }

    public func events(of backend: BackendID, after: Int64) async throws -> [StatusEvent] {
        try await database.read { db in
            try Row.fetchAll(
                db, sql: "SELECT * FROM backend_event WHERE backend = ? AND id > ? ORDER BY id",
                arguments: [backend.rawValue, after]
            ).map { row in
                StatusEvent(
                    id: row["id"], backend: backend, status: BackendStatus(rawValue: row["status"]) ?? .terminated,
                    reason: (row["reason"] as String?).flatMap(TerminationReason.init(rawValue:)),
                    exitCode: row["exit_code"], at: row["at"])
            }
        }
    }

    // MARK: leases

    public func expireLeases() async throws -> [StatusEvent] {
        try await endAll(
            reason: .keyExpired,
            selectedBy: "SELECT backend FROM key_lease WHERE backend IS NOT NULL AND expires_at <= ?",
            arguments: { now in [now] })
    }

    public func markLost(silentFor milliseconds: Int64) async throws -> [StatusEvent] {
        try await endAll(
            reason: .lost,
            selectedBy: """
                SELECT b.id FROM backend b JOIN drone d ON b.drone = d.name
                WHERE b.status < ? AND d.last_heartbeat < ?
                """,
            arguments: { now in [BackendStatus.terminated.rawValue, now - milliseconds] })
    }

    public func backendCounts(cluster: ClusterName, recentMilliseconds: Int64) async throws -> [BackendStatus: Int] {
        try await database.read { db in
            let since = try Self.clock(db) - recentMilliseconds
            let rows = try Row.fetchAll(
                db,
                sql: """
                    SELECT status, COUNT(*) AS n FROM backend WHERE cluster = ? AND (status < ? OR id IN
                        (SELECT backend FROM backend_event WHERE status = ? AND at >= ?))
                    GROUP BY status
                    """,
                arguments: [
                    cluster.rawValue, BackendStatus.terminated.rawValue, BackendStatus.terminated.rawValue, since,
                ])
            var counts: [BackendStatus: Int] = [:]
            for row in rows {
                if let status = BackendStatus(rawValue: row["status"]) { counts[status] = row["n"] }
            }
            return counts
        }
    }

    public func markLost(drone: DroneName, except running: Set<BackendID>) async throws -> [StatusEvent] {
        try await write { db, changes in
            let now = try Self.clock(db)
            let live = try String.fetchAll(
                db, sql: "SELECT id FROM backend WHERE drone = ? AND status > ? AND status < ?",
                arguments: [drone.rawValue, BackendStatus.scheduled.rawValue, BackendStatus.terminated.rawValue])
            let gone = live.compactMap { try? BackendID($0) }.filter { !running.contains($0) }
            return try gone.map { try Self.end(db, $0, reason: .lost, at: now, changes: &changes) }
        }
    }

    /// Ends, in one transaction, the backends a query selects (given the store's clock).
    private func endAll(
        reason: TerminationReason, selectedBy sql: String, arguments: @escaping @Sendable (Int64) -> StatementArguments
    ) async throws -> [StatusEvent] {
        try await write { db, changes in
            let now = try Self.clock(db)
            let backends = try String.fetchAll(db, sql: sql, arguments: arguments(now)).compactMap { try? BackendID($0) }
            return try backends.map { try Self.end(db, $0, reason: reason, at: now, changes: &changes) }
        }
    }

    // MARK: actions

    static func insertAction(
        _ db: Database, _ kind: DroneAction.Kind, backend: BackendID, drone: DroneName, at now: Int64
    ) throws -> Int64 {
        try db.cachedStatement(sql: "INSERT INTO drone_action (drone, backend, kind, created_at) VALUES (?, ?, ?, ?)")
            .execute(arguments: [drone.rawValue, backend.rawValue, kind.rawValue, now])
        return db.lastInsertedRowID
    }

    public func pendingActions(of drone: DroneName) async throws -> [DroneAction] {
        try await database.read { db in
            try Row.fetchAll(
                db, sql: "SELECT * FROM drone_action WHERE drone = ? AND acked = 0 ORDER BY id", arguments: [drone.rawValue]
            ).compactMap { row in
                guard let kind = DroneAction.Kind(rawValue: row["kind"]) else { return nil }
                return DroneAction(id: row["id"], drone: drone, backend: try BackendID(row["backend"]), kind: kind)
            }
        }
    }

    public func acknowledgeActions(_ ids: [Int64], drone: DroneName) async throws {
        try await database.write { db in
            for id in ids {
                try db.execute(
                    sql: "UPDATE drone_action SET acked = 1 WHERE id = ? AND drone = ?", arguments: [id, drone.rawValue])
            }
        }
    }

    // MARK: grants and tokens

    public func tokenKey() async throws -> [UInt8] {
        try await database.write { db in
            let fresh = randomBytes(32)
            try db.execute(
                sql: "INSERT INTO setting (name, value) VALUES ('token-key', ?) ON CONFLICT(name) DO NOTHING",
                arguments: [Data(fresh)])
            guard let key = try Data.fetchOne(db, sql: "SELECT value FROM setting WHERE name = 'token-key'"), key.count == 32
            else { throw StoreError("the token key in the store is not 32 bytes") }
            return Array(key)
        }
    }

    static func grant(_ row: Row) throws -> AccessGrant {
        AccessGrant(
            id: row["id"], backend: try BackendID(row["backend"]), user: row["user"], auth: row["auth"],
            staticToken: row["static_token"])
    }

    public func grant(_ id: Int64) async throws -> AccessGrant? {
        try await database.read { db in
            try Row.fetchOne(db.cachedStatement(sql: "SELECT * FROM access_grant WHERE id = ?"), arguments: [id])
                .map(Self.grant)
        }
    }

    public func grant(staticToken: String) async throws -> AccessGrant? {
        try await database.read { db in
            try Row.fetchOne(db.cachedStatement(sql: "SELECT * FROM access_grant WHERE static_token = ?"), arguments: [staticToken])
                .map(Self.grant)
        }
    }

    public func revokeGrants(of backend: BackendID, user: String?, id: Int64?) async throws -> [Int64] {
        try await write { db, changes in
            var sql = "FROM access_grant WHERE backend = ?"
            var arguments: StatementArguments = [backend.rawValue]
            if let user {
                sql += " AND user = ?"
                _ = arguments.append(contentsOf: [user])
            }
            if let id {
                sql += " AND id = ?"
                _ = arguments.append(contentsOf: [id])
            }
            let ids = try Int64.fetchAll(db, sql: "SELECT id " + sql, arguments: arguments)
            try db.execute(sql: "DELETE " + sql, arguments: arguments)
            if !ids.isEmpty { changes.append(.grantsRevoked(backend, ids: ids)) }
            return ids
        }
    }

    public func revokeToken(_ value: String, expiresAt: Int64) async throws -> Bool {
        try await database.write { db in
            try db.execute(
                sql: "INSERT INTO revoked_token (value, expires_at) VALUES (?, ?) ON CONFLICT(value) DO NOTHING",
                arguments: [value, expiresAt])
            return db.changesCount > 0
        }
    }

    public func isRevoked(_ token: String) async throws -> Bool {
        try await database.read { db in
            try Bool.fetchOne(db.cachedStatement(sql: "SELECT 1 FROM revoked_token WHERE value = ?"), arguments: [token]) ?? false
        }
    }

    public func deleteExpiredRevocations(limit: Int) async throws -> Int {
        try await database.write { db in
            try db.execute(
                sql: "DELETE FROM revoked_token WHERE value IN (SELECT value FROM revoked_token WHERE expires_at <= ? LIMIT ?)",
                arguments: [try Self.clock(db), limit])
            return db.changesCount
        }
    }
}

/// An exclusive flock on a file, held as long as this object lives (and by no one else:
/// a second one, in this process or another, is an error that says so).
final class LockFile: Sendable {
    private let fd: Int32

    init(_ path: String) throws {
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw StoreError("\(path): cannot open the lock file: \(String(cString: strerror(errno)))") }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            let reason = errno == EWOULDBLOCK ? "another process has the store open" : String(cString: strerror(errno))
            close(fd)
            throw StoreError("\(path): \(reason)")
        }
        self.fd = fd
    }

    deinit { close(fd) }
}

/// A store failure that is not SQLite's own.
public struct StoreError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}
