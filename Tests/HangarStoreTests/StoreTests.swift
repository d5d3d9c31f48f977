import Glibc
import HangarCore
import HangarStore
import Testing

/// The store's guarantees, on real SQLite files in WAL mode.
@Suite("Cluster store (SQLite)", .serialized, .timeLimit(.minutes(2)))
struct StoreTests {
    /// A fresh database file, removed with its WAL files by `remove`.
    struct Database {
        let path: String
        let store: SQLiteStore

        init() throws {
            path = "/tmp/hangar-store-\(UInt64.random(in: 0...UInt64.max)).sqlite"
            store = try SQLiteStore(path: path)
        }

        func remove() {
            for suffix in ["", "-wal", "-shm", "-lock"] { unlink(path + suffix) }
        }
    }

    let cluster = try! ClusterName("localhost:9090")

    func drone(_ name: String, backends: Int = 100, memory: UInt64 = 0) throws -> DroneRegistration {
        DroneRegistration(name: try DroneName(name), cluster: cluster, capacityBackends: backends, capacityMemory: memory)
    }

    /// One status change as drone dr-a reports it; the event made, if any.
    func record(
        _ store: SQLiteStore, _ backend: BackendID, _ status: BackendStatus, reason: TerminationReason?, exitCode: Int32?
    ) async throws -> StatusEvent? {
        try await store.recordStatuses(
            [StatusChange(backend: backend, status: status, reason: reason, exitCode: exitCode)], from: DroneName("dr-a")
        ).first
    }

    func plan(_ key: String, tag: String? = nil, spawn: Bool = true, memory: UInt64 = 1 << 20) throws -> ConnectPlan {
        ConnectPlan(
            key: KeyRef(name: try KeyName(key), tag: tag), cluster: cluster, spawnConfig: spawn ? #"{"image":"busybox"}"# : nil,
            memory: memory, choose: { $0.min { $0.load < $1.load }?.name })
    }

    @Test("500 concurrent connects for one key give exactly one backend; the others share it")
    func oneBackendPerKey() async throws {
        let database = try Database()
        defer { database.remove() }
        let store = database.store
        try await store.registerDrone(drone("dr-a"))
        let outcomes = try await withThrowingTaskGroup(of: ConnectOutcome.self) { group in
            for _ in 0..<500 { group.addTask { try await store.connect(try plan("doc-1")) } }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        var spawned: [BackendID] = []
        var existing: Set<BackendID> = []
        for outcome in outcomes {
            switch outcome {
            case .spawned(let backend, _, _): spawned.append(backend.id)
            case .existing(let backend, _): existing.insert(backend.id)
            default: Issue.record("unexpected \(outcome)")
            }
        }
        #expect(spawned.count == 1)
        #expect(existing == Set(spawned), "every other connect got the one backend")
        #expect(try await store.pendingActions(of: DroneName("dr-a")).count == 1, "one spawn action")
    }

    @Test("a terminated backend frees its key; the next holder gets a larger fencing token")
    func fencing() async throws {
        let database = try Database()
        defer { database.remove() }
        let store = database.store
        try await store.registerDrone(drone("dr-a"))
        guard case .spawned(let first, _, _) = try await store.connect(try plan("doc-1")) else {
            Issue.record("no spawn")
            return
        }
        #expect(first.fencingToken == 1)
        let foreign = StatusChange(backend: first.id, status: .ready, reason: nil, exitCode: nil)
        #expect(try await store.recordStatuses([foreign], from: DroneName("dr-b")).isEmpty, "only its drone reports on it")
        #expect(try await record(store, first.id, .ready, reason: nil, exitCode: nil) != nil)
        #expect(try await record(store, first.id, .loading, reason: nil, exitCode: nil) == nil, "only forward")
        #expect(try await record(store, first.id, .ready, reason: nil, exitCode: nil) == nil, "once")
        _ = try await record(store, first.id, .terminating, reason: .idle, exitCode: nil)
        #expect(try await store.connect(try plan("doc-1")) == .terminating(first.id), "never a dying backend")
        _ = try await record(store, first.id, .terminated, reason: .idle, exitCode: 0)
        #expect(try await store.pendingActions(of: DroneName("dr-a")).isEmpty, "an ended backend's spawn is never sent again")
        guard case .spawned(let second, _, _) = try await store.connect(try plan("doc-1")) else {
            Issue.record("no second spawn")
            return
        }
        #expect(second.fencingToken == 2)
        #expect(second.id != first.id)
        let events = try await store.events(of: first.id, after: 0)
        #expect(events.map(\.status) == [.scheduled, .ready, .terminating, .terminated])
        #expect(try await store.events(of: first.id, after: events[1].id).map(\.status) == [.terminating, .terminated])
        #expect(try await store.backend(first.id)?.reason == .idle)
    }

    @Test("a tag mismatch is key-held; no spawn config for a free key is refused")
    func tagsAndNoSpawn() async throws {
        let database = try Database()
        defer { database.remove() }
        let store = database.store
        try await store.registerDrone(drone("dr-a"))
        #expect(try await store.connect(try plan("doc-1", spawn: false)) == .keyUnheldNoSpawnConfig)
        guard case .spawned(let backend, _, _) = try await store.connect(try plan("doc-1", tag: "v1")) else {
            Issue.record("no spawn")
            return
        }
        #expect(try await store.connect(try plan("doc-1", tag: "v2")) == .keyHeld(tag: "v1"))
        #expect(try await store.connect(try plan("doc-1", tag: nil)) == .keyHeld(tag: "v1"))
        #expect(try await store.connect(try plan("doc-1", tag: "v1", spawn: false)) == .existing(backend, grant: nil))
        #expect(store.connectWithoutWriting(try plan("doc-1", tag: "v2")) == nil, "a mismatch is the transaction's to answer")
    }

    @Test("scheduling sees only fresh, undrained drones of the cluster, with their load")
    func candidates() async throws {
        let database = try Database()
        defer { database.remove() }
        let store = database.store
        try await store.registerDrone(drone("dr-a", backends: 10, memory: 64 << 20))
        try await store.registerDrone(drone("dr-b", backends: 10))
        try await store.registerDrone(
            DroneRegistration(name: try DroneName("dr-other"), cluster: try ClusterName("elsewhere"), capacityBackends: 10, capacityMemory: 0))
        #expect(try await store.setDraining(DroneName("dr-b"), true))
        #expect(try await !store.setDraining(DroneName("dr-nope"), true))
        for index in 0..<3 {
            guard case .spawned(let backend, _, _) = try await store.connect(try plan("k\(index)", memory: 16 << 20)) else {
                Issue.record("no spawn")
                return
            }
            #expect(backend.drone.rawValue == "dr-a", "dr-b drains, dr-other is another cluster")
        }
        let a = try #require(try await store.drones(cluster: cluster).first { $0.name.rawValue == "dr-a" })
        #expect(a.liveBackends == 3 && a.committedMemory == 48 << 20)
        #expect(a.load == 0.75, "memory is the larger share: 48 of 64 MiB")
        #expect(try await store.setDraining(DroneName("dr-a"), true))
        #expect(try await store.connect(try plan("k9")) == .noDroneAvailable)
        // A drone whose heartbeat is older than the freshness is no candidate either.
        #expect(try await store.setDraining(DroneName("dr-b"), false))
        var stale = try plan("k10")
        stale.heartbeatFreshness = -1
        #expect(try await store.connect(stale) == .noDroneAvailable)
    }

    @Test("leases: renewed by the drone; expired ones free the key; a lost drone's backends end as lost")
    func leases() async throws {
        let database = try Database()
        defer { database.remove() }
        let store = database.store
        try await store.registerDrone(drone("dr-a"))
        var short = try plan("doc-1")
        short.leaseSeconds = 0
        guard case .spawned(let first, _, _) = try await store.connect(short) else {
            Issue.record("no spawn")
            return
        }
        #expect(try await store.expireLeases().map(\.backend) == [first.id], "a lease of 0 s has expired at once")
        #expect(try await store.backend(first.id)?.reason == .keyExpired)
        guard case .spawned(let second, _, _) = try await store.connect(try plan("doc-1")) else {
            Issue.record("the expired key was not free")
            return
        }
        #expect(try await store.heartbeat(DroneName("dr-a"), renewingLeasesFor: 60))
        #expect(try await store.heartbeat(DroneName("dr-nobody"), renewingLeasesFor: 60) == false)
        #expect(try await store.expireLeases().isEmpty)
        #expect(try await store.markLost(silentFor: 60_000).isEmpty, "its heartbeat is fresh")
        #expect(try await store.markLost(silentFor: -1).map(\.backend) == [second.id])
        #expect(try await store.backend(second.id)?.reason == .lost)
        guard case .spawned(let third, _, _) = try await store.connect(try plan("doc-1")) else {
            Issue.record("the lost backend's key was not free")
            return
        }
        #expect(third.fencingToken == 3)
    }

    @Test("actions stay pending and live keys answer from memory across a reopen; one store per file; revoked tokens expire")
    func reopen() async throws {
        let path = "/tmp/hangar-store-\(UInt64.random(in: 0...UInt64.max)).sqlite"
        defer { for suffix in ["", "-wal", "-shm", "-lock"] { unlink(path + suffix) } }
        var held = try plan("doc-2")
        held.grant = GrantRequest(user: "ada", auth: "{}")
        let (spawn, otherSpawn, terminate, kept, grant): (Int64, Int64, Int64, BackendRecord, AccessGrant?)
        do {
            let store = try SQLiteStore(path: path)
            try await store.registerDrone(drone("dr-a"))
            guard case .spawned(let backend, let action, _) = try await store.connect(try plan("doc-1")),
                case .spawned(let other, let otherAction, let made) = try await store.connect(held)
            else {
                Issue.record("no spawn")
                return
            }
            (spawn, otherSpawn, kept, grant) = (action, otherAction, other, made)
            terminate = try #require(try await store.requestTermination(backend.id, hard: false)).1.id
            // A second store on the same file would not see the first one's live keys.
            #expect { try SQLiteStore(path: path) } throws: { "\($0)".contains("another process has the store open") }
        }
        // The controller restarts: a new store on the same file.
        let reopened = try SQLiteStore(path: path)
        #expect(try await reopened.pendingActions(of: DroneName("dr-a")).map(\.id) == [spawn, otherSpawn, terminate])
        try await reopened.acknowledgeActions([spawn, otherSpawn], drone: DroneName("dr-a"))
        try await reopened.acknowledgeActions([spawn], drone: DroneName("dr-a"))  // twice: no harm
        #expect(try await reopened.pendingActions(of: DroneName("dr-a")).map(\.kind) == [.terminate])
        #expect(reopened.connectWithoutWriting(held) == .existing(kept, grant: grant), "the live key, read back")
        #expect(reopened.connectWithoutWriting(try plan("doc-1")) == nil, "a terminating backend is not handed out")

        let now = try await reopened.now()
        #expect(try await reopened.revokeToken("tok-live", expiresAt: now + 60_000))
        #expect(try await !reopened.revokeToken("tok-live", expiresAt: now + 60_000), "once")
        #expect(try await reopened.revokeToken("tok-old", expiresAt: now - 1))
        #expect(try await reopened.deleteExpiredRevocations(limit: 100) == 1, "the sweep deletes the expired one only")
        #expect(try await reopened.isRevoked("tok-live"))
        #expect(try await !reopened.isRevoked("tok-old"))
    }

    @Test("a connect finds or makes its user's grant; a static token is the backend's one grant; memory answers as the transaction does")
    func grants() async throws {
        let store = try SQLiteStore(path: ":memory:")
        try await store.registerDrone(drone("dr-a"))
        func plan(_ key: String, user: String, auth: String = "{}", staticToken: String? = nil) throws -> ConnectPlan {
            var plan = try self.plan(key)
            plan.grant = GrantRequest(user: user, auth: auth, staticToken: staticToken)
            return plan
        }
        guard case .spawned(let first, _, let staticGrant) = try await store.connect(try plan("doc-1", user: "ada", staticToken: "s.tok-1"))
        else {
            Issue.record("no spawn")
            return
        }
        #expect(staticGrant?.staticToken == "s.tok-1" && staticGrant?.user == "ada")
        let bob = try plan("doc-1", user: "bob")
        #expect(store.connectWithoutWriting(bob) == .existing(first, grant: staticGrant), "every connect: the static grant")
        #expect(try await store.connect(bob) == .existing(first, grant: staticGrant))
        #expect(try await store.grant(staticToken: "s.tok-1") == staticGrant)

        let editor = try plan("doc-2", user: "ada", auth: #"{"role":"editor"}"#)
        guard case .spawned(let second, _, let plain) = try await store.connect(editor), let plain else {
            Issue.record("no second spawn")
            return
        }
        #expect(plain.staticToken == nil && plain.auth == #"{"role":"editor"}"#)
        #expect(store.connectWithoutWriting(editor) == .existing(second, grant: plain), "the same user and auth: no write")
        let cy = try plan("doc-2", user: "cy")
        #expect(store.connectWithoutWriting(cy) == nil, "a new user needs a write")
        guard case .existing(_, let cys) = try await store.connect(cy), let cys else {
            Issue.record("no grant for cy")
            return
        }
        #expect(cys.id != plain.id && store.connectWithoutWriting(cy) == .existing(second, grant: cys))
        #expect(try await store.connect(try plan("doc-2", user: "ada", auth: #"{"role":"editor"}"#, staticToken: "s.no")) == .existing(second, grant: plain), "only a spawn makes a static token")

        #expect(try await store.revokeGrants(of: second.id, user: "ada", id: nil) == [plain.id])
        #expect(try await store.grant(plain.id) == nil)
        #expect(store.connectWithoutWriting(editor) == nil, "revoked: the next connect makes a new grant")
        guard case .existing(_, let renewed) = try await store.connect(editor), let renewed else {
            Issue.record("no new grant")
            return
        }
        #expect(renewed.id > cys.id, "grant ids are never reused: an old token never names a new grant")

        _ = try #require(try await store.requestTermination(second.id, hard: true))
        #expect(store.connectWithoutWriting(editor) == nil, "never a dying backend from memory")
        _ = try await record(store, second.id, .terminated, reason: .external, exitCode: nil)
        #expect(try await store.grant(renewed.id) == nil, "an ended backend's grants go with it")
        #expect(try await store.grant(cys.id) == nil)

        var chosen = try self.plan("doc-3")
        chosen.newBackend = first.id
        chosen.clientChoseID = true
        #expect(try await store.connect(chosen) == .backendIDTaken(first.id))
    }

    @Test("memory answers only while the lease holds: a heartbeat renews it, as in the database")
    func leasesInMemory() async throws {
        let store = try SQLiteStore(path: ":memory:")
        try await store.registerDrone(drone("dr-a"))
        var lapsing = try plan("doc-1")
        lapsing.leaseSeconds = 0
        guard case .spawned(let backend, _, _) = try await store.connect(lapsing) else {
            Issue.record("no spawn")
            return
        }
        #expect(store.connectWithoutWriting(try plan("doc-1")) == nil, "the lease has run out")
        #expect(try await store.connect(try plan("doc-1")) == .terminating(backend.id))
        #expect(try await store.heartbeat(DroneName("dr-a"), renewingLeasesFor: 30))
        #expect(store.connectWithoutWriting(try plan("doc-1")) == .existing(backend, grant: nil), "renewed")
        #expect(try await store.connect(try plan("doc-1")) == .existing(backend, grant: nil))
        #expect(try await store.heartbeat(DroneName("dr-a"), renewingLeasesFor: 0))
        #expect(store.connectWithoutWriting(try plan("doc-1")) == nil, "the last renewal decides, shorter or not")
    }
}
