import HangarCore
import Synchronization

/// The live keys as the last committed transaction left them, in memory: a connect to a
/// key that has its backend (and a grant for the connect's user) is answered from here,
/// without a transaction. Only the store's writer changes it, after each commit, with
/// what that transaction wrote; so it is exact while one process writes the database,
/// which the store's lock file makes sure of. When in doubt (a lease near its end, a
/// terminating backend, another tag, a grant not yet made) it answers nothing and the
/// connect takes the transaction.
final class LiveKeys: Sendable {
    struct KeyID: Hashable {
        var namespace: NamespaceName
        var name: KeyName
    }

    struct GrantKey: Hashable {
        var user: String?
        var auth: String
    }

    struct Entry {
        var backend: BackendRecord
        /// The lease as the backend's spawn set it, and the change that did (a later
        /// heartbeat of its drone renews it).
        var leaseExpiresAt: Int64
        var leaseChange: Int
        var grants: [GrantKey: AccessGrant] = [:]
        var staticGrant: AccessGrant?
    }

    /// What a committed transaction changed.
    enum Change: Sendable {
        /// A key's new holder, with its lease.
        case held(BackendRecord, leaseExpiresAt: Int64)
        /// A backend moved on; terminated removes its key.
        case advanced(BackendID, BackendStatus, reason: TerminationReason?)
        case granted(AccessGrant)
        case grantsRevoked(BackendID, ids: [Int64])
        /// A drone's heartbeat renewed the leases of its backends' keys.
        case renewed(DroneName, until: Int64)
    }

    private struct State {
        var entries: [KeyID: Entry] = [:]
        var keyOf: [BackendID: KeyID] = [:]
        /// The last renewal of each drone's leases: until when, and at which change.
        var renewals: [DroneName: (until: Int64, change: Int)] = [:]
        /// Changes applied so far, in commit order: which lease was written last.
        var changes = 0
    }

    private let state = Mutex(State())

    func apply(_ changes: [Change]) {
        state.withLock { state in
            for change in changes {
                state.changes += 1
                switch change {
                case .held(let backend, let expiresAt):
                    let key = KeyID(namespace: backend.key.namespace, name: backend.key.name)
                    if let previous = state.entries[key] { state.keyOf[previous.backend.id] = nil }
                    state.entries[key] = Entry(backend: backend, leaseExpiresAt: expiresAt, leaseChange: state.changes)
                    state.keyOf[backend.id] = key
                case .advanced(let backend, let status, let reason):
                    guard let key = state.keyOf[backend] else { continue }
                    if status == .terminated {
                        state.entries[key] = nil
                        state.keyOf[backend] = nil
                    } else {
                        state.entries[key]?.backend.status = status
                        if let reason { state.entries[key]?.backend.reason = reason }
                    }
                case .granted(let grant):
                    guard let key = state.keyOf[grant.backend] else { continue }
                    if grant.staticToken != nil {
                        state.entries[key]?.staticGrant = grant
                    } else {
                        state.entries[key]?.grants[GrantKey(user: grant.user, auth: grant.auth)] = grant
                    }
                case .grantsRevoked(let backend, let ids):
                    guard let key = state.keyOf[backend], var entry = state.entries[key] else { continue }
                    let gone = Set(ids)
                    entry.grants = entry.grants.filter { !gone.contains($0.value.id) }
                    if let grant = entry.staticGrant, gone.contains(grant.id) { entry.staticGrant = nil }
                    state.entries[key] = entry
                case .renewed(let drone, let until):
                    state.renewals[drone] = (until, state.changes)
                }
            }
        }
    }

    /// The outcome `connect` would have without writing anything, or nil.
    func answer(_ plan: ConnectPlan, now: Int64) -> ConnectOutcome? {
        state.withLock { state in
            guard let entry = state.entries[KeyID(namespace: plan.key.namespace, name: plan.key.name)],
                entry.backend.status < .terminating, entry.backend.key.tag == plan.key.tag
            else { return nil }
            // The lease as the last write left it: the spawn's, or a later renewal's.
            var expiresAt = entry.leaseExpiresAt
            if let renewal = state.renewals[entry.backend.drone], renewal.change > entry.leaseChange {
                expiresAt = renewal.until
            }
            // A lease within a second of its end is the transaction's to judge (SQLite reads
            // the clock on its own).
            guard now + 1000 < expiresAt else { return nil }
            guard let request = plan.grant else { return .existing(entry.backend, grant: nil) }
            if let grant = entry.staticGrant { return .existing(entry.backend, grant: grant) }
            guard let grant = entry.grants[GrantKey(user: request.user, auth: request.auth)] else { return nil }
            return .existing(entry.backend, grant: grant)
        }
    }
}
