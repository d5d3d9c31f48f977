import GRDB
import Glibc
import HangarCore
import HangarSandbox
import Logging
import Synchronization

/// The drone's state on disk (SQLite through GRDB): every backend with its latest state,
/// and an event log of status changes with ids, for the controller to read and
/// acknowledge. A drone that starts after a crash finds its previous backends here.
public final class DroneStore: Sendable {
    let database: any DatabaseWriter
    /// A failed write has nowhere to go but the drone's log: the drone goes on.
    static let logger = Logger(label: "hangar.drone")
    private let watchers = Mutex<[Int: AsyncStream<Void>.Continuation]>([:])
    private let nextWatcher = Atomic<Int>(0)

    /// One status change of one backend.
    public struct Event: Sendable, Equatable {
        public let id: Int64
        public let backend: BackendID
        public let status: BackendStatus
        public let reason: TerminationReason?
        public let exitCode: Int32?
    }

    /// Opens (and creates, or migrates) the database at `path`; ":memory:" for a store
    /// that lives as long as the process.
    public init(path: String) throws(DroneError) {
        do {
            if path != ":memory:" { try? makeParentDirectory(of: path) }
            // A file in WAL mode with synchronous = NORMAL: a status change costs no fsync
            // (a power loss may lose the last few; a crash of the drone loses none).
            var configuration = Configuration()
            configuration.prepareDatabase { db in try db.execute(sql: "PRAGMA synchronous = NORMAL") }
            database =
                path == ":memory:"
                ? try DatabaseQueue(configuration: configuration)
                : try DatabasePool(path: path, configuration: configuration)
            var migrator = DatabaseMigrator()
            migrator.registerMigration("1: backends and events") { db in
                try db.create(table: "backend") { t in
                    t.primaryKey("id", .text)
                    t.column("key", .text).notNull()
                    t.column("image", .text).notNull()
                    t.column("status", .integer).notNull()
                    t.column("reason", .text)
                    t.column("exitCode", .integer)
                }
                try db.create(table: "event") { t in
                    t.autoIncrementedPrimaryKey("id")
                    t.column("backend", .text).notNull().references("backend")
                    t.column("status", .integer).notNull()
                    t.column("reason", .text)
                    t.column("exitCode", .integer)
                    t.column("acked", .boolean).notNull().defaults(to: false)
                }
            }
            try migrator.migrate(database)
        } catch {
            throw DroneError("the drone's state in \(path): \(error)")
        }
    }

    /// Records a backend's new state and the event.
    func record(id: BackendID, key: KeyName, image: String, state: BackendState) {
        do {
            try database.write { db in
                try db.execute(
                    sql: """
                        INSERT INTO backend (id, key, image, status, reason, exitCode) VALUES (?, ?, ?, ?, ?, ?)
                        ON CONFLICT(id) DO UPDATE SET status = excluded.status, reason = excluded.reason,
                        exitCode = excluded.exitCode
                        """,
                    arguments: [id.rawValue, key.rawValue, image, state.status.rawValue, state.reason?.rawValue, state.exitCode])
                try db.execute(
                    sql: "INSERT INTO event (backend, status, reason, exitCode) VALUES (?, ?, ?, ?)",
                    arguments: [id.rawValue, state.status.rawValue, state.reason?.rawValue, state.exitCode])
            }
        } catch {
            // The drone goes on; the controller protocol replays from what was stored.
            Self.logger.error("recording a backend failed", metadata: ["backend.id": "\(id)", "error": "\(error)"])
        }
        notify()
    }

    /// Records a backend that never started (its spawn was refused): terminated, reason
    /// internal-error.
    func recordRefused(id: BackendID, key: String, image: String) {
        do {
            try database.write { db in
                try db.execute(
                    sql: """
                        INSERT INTO backend (id, key, image, status, reason) VALUES (?, ?, ?, ?, ?)
                        ON CONFLICT(id) DO NOTHING
                        """,
                    arguments: [id.rawValue, key, image, BackendStatus.terminated.rawValue, TerminationReason.internalError.rawValue])
                guard db.changesCount > 0 else { return }
                try db.execute(
                    sql: "INSERT INTO event (backend, status, reason) VALUES (?, ?, ?)",
                    arguments: [id.rawValue, BackendStatus.terminated.rawValue, TerminationReason.internalError.rawValue])
            }
        } catch {
            Self.logger.error("recording a backend failed", metadata: ["backend.id": "\(id)", "error": "\(error)"])
        }
        notify()
    }

    /// A signal after every recorded event (at most one waiting), for whoever forwards them.
    public func changes() -> AsyncStream<Void> {
        let (stream, continuation) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        let id = nextWatcher.wrappingAdd(1, ordering: .relaxed).newValue
        continuation.onTermination = { [weak self] _ in _ = self?.watchers.withLock { $0.removeValue(forKey: id) } }
        watchers.withLock { $0[id] = continuation }
        return stream
    }

    private func notify() {
        for watcher in watchers.withLock({ Array($0.values) }) { watcher.yield() }
    }

    /// Backends a previous run left unterminated: they died with it (PR_SET_PDEATHSIG and
    /// the cgroup sweep); recorded now as terminated, reason lost. Returns their ids.
    func recoverLost() throws(DroneError) -> [BackendID] {
        do {
            return try database.write { db in
                let ids = try String.fetchAll(db, sql: "SELECT id FROM backend WHERE status < ? ORDER BY id", arguments: [BackendStatus.terminated.rawValue])
                for id in ids {
                    try db.execute(
                        sql: "UPDATE backend SET status = ?, reason = ? WHERE id = ?",
                        arguments: [BackendStatus.terminated.rawValue, TerminationReason.lost.rawValue, id])
                    try db.execute(
                        sql: "INSERT INTO event (backend, status, reason) VALUES (?, ?, ?)",
                        arguments: [id, BackendStatus.terminated.rawValue, TerminationReason.lost.rawValue])
                }
                return ids.compactMap { try? BackendID($0) }
            }
        } catch {
            throw DroneError("recovering the previous run's backends: \(error)")
        }
    }

    /// Events not yet acknowledged (after event `after`), oldest first.
    public func unacknowledged(after: Int64 = 0, limit: Int = 1000) throws -> [Event] {
        try database.read { db in
            try Row.fetchAll(
                db, sql: "SELECT * FROM event WHERE acked = 0 AND id > ? ORDER BY id LIMIT ?", arguments: [after, limit]
            ).map { row in
                Event(
                    id: row["id"], backend: try BackendID(row["backend"]), status: BackendStatus(rawValue: row["status"]) ?? .terminated,
                    reason: (row["reason"] as String?).flatMap(TerminationReason.init(rawValue:)), exitCode: row["exitCode"])
            }
        }
    }

    /// Acknowledges every event up to and including `id`.
    public func acknowledge(upTo id: Int64) throws {
        try database.write { try $0.execute(sql: "UPDATE event SET acked = 1 WHERE id <= ?", arguments: [id]) }
    }

    /// A backend as last recorded.
    public struct Stored: Sendable, Equatable {
        public let id: BackendID
        /// As recorded: "" for a refused spawn that named no valid key.
        public let key: String
        public let image: String
        public let status: BackendStatus
        public let reason: TerminationReason?
        public let exitCode: Int32?
    }

    /// A backend's last recorded state.
    public func backend(_ id: BackendID) throws -> Stored? {
        try database.read { db in
            guard let row = try Row.fetchOne(db, sql: "SELECT * FROM backend WHERE id = ?", arguments: [id.rawValue]) else {
                return nil
            }
            return Stored(
                id: id, key: row["key"], image: row["image"],
                status: BackendStatus(rawValue: row["status"]) ?? .terminated,
                reason: (row["reason"] as String?).flatMap(TerminationReason.init(rawValue:)), exitCode: row["exitCode"])
        }
    }
}

