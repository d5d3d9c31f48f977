import GRDB
import HangarCore

/// The embedded store: SQLite through GRDB (the system libsqlite3), in WAL mode. Every
/// write is one serialized transaction, so the check and the claim of a key cannot
/// interleave; the primary key of `key_lease` is the last word on one holder per key.
/// Its clock is SQLite's own (`now()`).
public final class SQLiteStore: ClusterStore {
    let database: any DatabaseWriter

    /// Opens (creating and migrating) the database at `path`; ":memory:" for one that
    /// lives as long as this object.
    public init(path: String) throws {
        var configuration = Configuration()
        configuration.foreignKeysEnabled = true
        configuration.busyMode = .timeout(5)
        configuration.prepareDatabase { db in try db.execute(sql: "PRAGMA synchronous = NORMAL") }
        database =
            path == ":memory:"
            ? try DatabaseQueue(configuration: configuration) : try DatabasePool(path: path, configuration: configuration)
        try Self.migrator.migrate(database)
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
        try await database.write { db in
            let now = try Self.clock(db)
            try db.execute(sql: "UPDATE drone SET last_heartbeat = ? WHERE name = ?", arguments: [now, drone.rawValue])
            guard db.changesCount > 0 else { return false }
            try db.execute(
                sql: """
                    UPDATE key_lease SET expires_at = ? WHERE backend IN
                        (SELECT id FROM backend WHERE drone = ? AND status < ?)
                    """,
                arguments: [now + Int64(seconds) * 1000, drone.rawValue, BackendStatus.terminated.rawValue])
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
        var sql = "SELECT *, live_backends AS live, committed_memory AS committed FROM drone d"
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
                draining: row["draining"], lastHeartbeat: row["last_heartbeat"], liveBackends: row["live"],
                committedMemory: UInt64(bitPattern: row["committed"]))
        }
    }

    // MARK: connect

    public func connect(_ plans: [ConnectPlan]) async throws -> [Result<ConnectOutcome, any Error>] {
        // The whole batch in one transaction; should any plan fail (a store error), each is
        // done again in a transaction of its own, so that one failure fails one connect.
        do {
            return try await database.write { db in
                let now = try Self.clock(db)
                return try plans.map { .success(try Self.connect(db, $0, now: now)) }
            }
        } catch {
            guard plans.count > 1 else { return [.failure(error)] }
            var results: [Result<ConnectOutcome, any Error>] = []
            for plan in plans {
                do {
                    results.append(.success(try await database.write { db in try Self.connect(db, plan, now: try Self.clock(db)) }))
                } catch {
                    results.append(.failure(error))
                }
            }
            return results
        }
    }

    static func connect(_ db: Database, _ plan: ConnectPlan, now: Int64) throws -> ConnectOutcome {
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
                    return .existing(backend, token: try issue(db, plan.token, for: backend.id, spawning: false, now: now))
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
            exitCode: nil, fencingToken: fencingToken, memory: plan.memory, spawnConfig: spawnConfig, createdAt: now)
        try db.execute(
            sql: """
                INSERT INTO backend (id, cluster, drone, key_namespace, key_name, key_tag, status, fencing_token,
                    memory, spawn_config, created_at)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """,
            arguments: [
                backend.id.rawValue, plan.cluster.rawValue, drone.rawValue, key.namespace.rawValue, key.name.rawValue,
                key.tag, BackendStatus.scheduled.rawValue, fencingToken, Int64(bitPattern: plan.memory), spawnConfig,
                now,
            ])
        try db.execute(
            sql: """
                INSERT INTO key_lease (namespace, name, backend, tag, fencing_token, expires_at)
                VALUES (?, ?, ?, ?, ?, ?)
                ON CONFLICT(namespace, name) DO UPDATE SET backend = excluded.backend, tag = excluded.tag,
                    fencing_token = excluded.fencing_token, expires_at = excluded.expires_at
                """,
            arguments: [
                key.namespace.rawValue, key.name.rawValue, backend.id.rawValue, key.tag, fencingToken,
                now + Int64(plan.leaseSeconds) * 1000,
            ])
        try db.cachedStatement(
            sql: "UPDATE drone SET live_backends = live_backends + 1, committed_memory = committed_memory + ? WHERE name = ?"
        ).execute(arguments: [Int64(bitPattern: plan.memory), drone.rawValue])
        _ = try Self.insertEvent(db, backend.id, .scheduled, reason: nil, exitCode: nil, at: now)
        let action = try Self.insertAction(db, .spawn, backend: backend.id, drone: drone, at: now)
        return .spawned(backend, action: action, token: try issue(db, plan.token, for: backend.id, spawning: true, now: now))
    }

    /// The token a connect gets: the backend's static token when it has one (a spawn with
    /// use_static_token makes it), else the draft, stored.
    static func issue(_ db: Database, _ draft: TokenDraft?, for backend: BackendID, spawning: Bool, now: Int64) throws
        -> TokenRecord?
    {
        guard let draft else { return nil }
        if !spawning,
            let row = try Row.fetchOne(
                db.cachedStatement(sql: "SELECT * FROM token WHERE backend = ? AND is_static = 1 LIMIT 1"),
                arguments: [backend.rawValue])
        {
            return try token(row)
        }
        let isStatic = draft.isStatic && spawning
        let token = TokenRecord(
            value: draft.value, backend: backend, user: draft.user, auth: draft.auth, secret: draft.secret,
            expiresAt: isStatic ? Int64.max : now + draft.lifetimeMilliseconds, isStatic: isStatic)
        try insert(db, token)
        return token
    }

    // MARK: backends and events

    public func backend(_ id: BackendID) async throws -> BackendRecord? {
        try await database.read { db in try Self.backend(db, id) }
    }

    static func backend(_ db: Database, _ id: BackendID) throws -> BackendRecord? {
        guard let row = try Row.fetchOne(db.cachedStatement(sql: "SELECT * FROM backend WHERE id = ?"), arguments: [id.rawValue])
        else {
            return nil
        }
        return BackendRecord(
            id: id, cluster: try ClusterName(row["cluster"]), drone: try DroneName(row["drone"]),
            key: KeyRef(
                namespace: try NamespaceName(row["key_namespace"]), name: try KeyName(row["key_name"]),
                tag: row["key_tag"]),
            status: BackendStatus(rawValue: row["status"]) ?? .terminated,
            reason: (row["reason"] as String?).flatMap(TerminationReason.init(rawValue:)), exitCode: row["exit_code"],
            fencingToken: row["fencing_token"], memory: UInt64(bitPattern: row["memory"]),
            spawnConfig: row["spawn_config"], createdAt: row["created_at"])
    }

    public func recordStatuses(_ changes: [StatusChange], from drone: DroneName) async throws -> [StatusEvent] {
        try await database.write { db in
            let now = try Self.clock(db)
            return try changes.compactMap { change in
                guard let current = try Self.backend(db, change.backend), current.drone == drone,
                    change.status > current.status
                else { return nil }
                return try Self.advance(
                    db, change.backend, to: change.status, reason: change.reason, exitCode: change.exitCode, at: now)
            }
        }
    }

    /// Moves a backend forward, records the event, and frees its key once terminated.
    static func advance(
        _ db: Database, _ backend: BackendID, to status: BackendStatus, reason: TerminationReason?, exitCode: Int32?,
        at now: Int64
    ) throws -> StatusEvent {
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
        }
        return try insertEvent(db, backend, status, reason: reason, exitCode: exitCode, at: now)
    }

    /// Ends a backend in the store alone (its drone is gone or out of reach).
    static func end(_ db: Database, _ backend: BackendID, reason: TerminationReason, at now: Int64) throws {
        _ = try advance(db, backend, to: .terminated, reason: reason, exitCode: nil, at: now)
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

    public func requestTermination(_ backend: BackendID, hard: Bool) async throws -> (BackendRecord, DroneAction)? {
        try await database.write { db in
            let status: BackendStatus = hard ? .hardTerminating : .terminating
            guard var record = try Self.backend(db, backend), record.status < status else { return nil }
            let now = try Self.clock(db)
            _ = try Self.advance(db, backend, to: status, reason: .external, exitCode: nil, at: now)
            let kind: DroneAction.Kind = hard ? .hardTerminate : .terminate
            let id = try Self.insertAction(db, kind, backend: backend, drone: record.drone, at: now)
            record.status = status
            record.reason = .external
            return (record, DroneAction(id: id, drone: record.drone, backend: backend, kind: kind))
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

    public func expireLeases() async throws -> [BackendID] {
        try await endAll(
            reason: .keyExpired,
            selectedBy: "SELECT backend FROM key_lease WHERE backend IS NOT NULL AND expires_at <= ?",
            arguments: { now in [now] })
    }

    public func markLost(silentFor milliseconds: Int64) async throws -> [BackendID] {
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

    public func markLost(drone: DroneName, except running: Set<BackendID>) async throws -> [BackendID] {
        try await database.write { db in
            let now = try Self.clock(db)
            let live = try String.fetchAll(
                db, sql: "SELECT id FROM backend WHERE drone = ? AND status > ? AND status < ?",
                arguments: [drone.rawValue, BackendStatus.scheduled.rawValue, BackendStatus.terminated.rawValue])
            let gone = live.compactMap { try? BackendID($0) }.filter { !running.contains($0) }
            for backend in gone { try Self.end(db, backend, reason: .lost, at: now) }
            return gone
        }
    }

    /// Ends, in one transaction, the backends a query selects (given the store's clock).
    private func endAll(
        reason: TerminationReason, selectedBy sql: String, arguments: @escaping @Sendable (Int64) -> StatementArguments
    ) async throws -> [BackendID] {
        try await database.write { db in
            let now = try Self.clock(db)
            let backends = try String.fetchAll(db, sql: sql, arguments: arguments(now)).compactMap { try? BackendID($0) }
            for backend in backends { try Self.end(db, backend, reason: reason, at: now) }
            return backends
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

    // MARK: tokens

    public func insertToken(_ token: TokenRecord) async throws {
        try await database.write { db in try Self.insert(db, token) }
    }

    static func insert(_ db: Database, _ token: TokenRecord) throws {
        try db.cachedStatement(
            sql: "INSERT INTO token (value, backend, user, auth, secret, expires_at, is_static) VALUES (?, ?, ?, ?, ?, ?, ?)"
        ).execute(
            arguments: [
                token.value, token.backend.rawValue, token.user, token.auth, token.secret, token.expiresAt, token.isStatic,
            ])
    }

    static func token(_ row: Row) throws -> TokenRecord {
        TokenRecord(
            value: row["value"], backend: try BackendID(row["backend"]), user: row["user"], auth: row["auth"],
            secret: row["secret"], expiresAt: row["expires_at"], isStatic: row["is_static"])
    }

    public func token(_ value: String) async throws -> TokenRecord? {
        try await database.read { db in
            try Row.fetchOne(
                db, sql: "SELECT * FROM token WHERE value = ? AND expires_at > ?", arguments: [value, try Self.clock(db)]
            ).map(Self.token)
        }
    }

    public func deleteExpiredTokens(limit: Int) async throws -> Int {
        try await database.write { db in
            try db.execute(
                sql: "DELETE FROM token WHERE value IN (SELECT value FROM token WHERE expires_at <= ? LIMIT ?)",
                arguments: [try Self.clock(db), limit])
            return db.changesCount
        }
    }

    public func revokeTokens(of backend: BackendID, user: String?, value: String?) async throws -> [String] {
        try await database.write { db in
            var sql = "FROM token WHERE backend = ?"
            var arguments: StatementArguments = [backend.rawValue]
            if let user {
                sql += " AND user = ?"
                _ = arguments.append(contentsOf: [user])
            }
            if let value {
                sql += " AND value = ?"
                _ = arguments.append(contentsOf: [value])
            }
            let values = try String.fetchAll(db, sql: "SELECT value " + sql, arguments: arguments)
            try db.execute(sql: "DELETE " + sql, arguments: arguments)
            return values
        }
    }
}
