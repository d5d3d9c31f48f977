import HangarCore
import HangarStore
import Logging
import Synchronization

extension Controller {
    /// Ends a backend: soft (SIGTERM and its grace period) or hard (SIGKILL). Its key is
    /// not handed out again from now on; it is free once the drone reports the end.
    public func terminate(_ backend: BackendID, hard: Bool) async throws(ControllerError) -> BackendStatusView {
        try await withStore {
            if let (record, action, event) = try await store.requestTermination(backend, hard: hard) {
                logger.info(
                    hard ? "backend kill requested" : "backend termination requested",
                    metadata: ["backend.id": "\(backend)", "key": "\(record.key.name)", "drone": "\(record.drone)"])
                feed.publish(event)
                drones.send(try order(for: record, action: action.id, kind: action.kind), to: record.drone)
            }
        }
        return try await status(of: backend)
    }

    /// A backend's latest status.
    public func status(of backend: BackendID) async throws(ControllerError) -> BackendStatusView {
        let events = try await withStore { try await store.events(of: backend, after: 0) }
        guard let last = events.last else { throw ControllerError(.notFound, "no backend \(backend)") }
        // The reason and exit code are those of the latest event that has one.
        return BackendStatusView(
            status: last.status, reason: events.last { $0.reason != nil }?.reason,
            exitCode: events.last { $0.exitCode != nil }?.exitCode, time: last.at)
    }

    /// Stops (or resumes) new placements on a drone.
    public func setDraining(cluster: ClusterName, drone: DroneName, _ draining: Bool) async throws(ControllerError) {
        try await withStore {
            guard try await store.drone(drone)?.registration.cluster == cluster, try await store.setDraining(drone, draining)
            else { throw ControllerError(.notFound, "no drone \(drone) in cluster \(cluster)") }
        }
    }

    /// Revokes access to a backend and tells the proxies: one token (`token`), or the
    /// grants of a user (every token of theirs), or every grant of the backend. `revoked`
    /// counts the tokens or grants that stopped resolving.
    public func revoke(_ request: RevokeRequest) async throws(ControllerError) -> RevokeResponse {
        let signer = try await tokenSigner()
        return try await withStore {
            let backend = request.backend_id
            guard try await store.backend(backend) != nil else { throw ControllerError(.notFound, "no backend \(backend)") }
            if let token = request.token {
                guard let (grant, expiresAt) = try await grant(of: token, signer: signer), grant.backend == backend else {
                    return RevokeResponse(revoked: 0)
                }
                // A signed token is refused until it expires; a static one goes with its grant.
                if let expiresAt {
                    guard try await store.revokeToken(token, expiresAt: expiresAt) else { return RevokeResponse(revoked: 0) }
                    proxies.broadcast(.revoked(Revocation(tokens: [token])))
                } else {
                    let ids = try await store.revokeGrants(of: backend, user: nil, id: grant.id)
                    proxies.broadcast(.revoked(Revocation(tokens: [token], grants: ids)))
                }
                return RevokeResponse(revoked: 1)
            }
            let ids = try await store.revokeGrants(of: backend, user: request.user, id: nil)
            if !ids.isEmpty { proxies.broadcast(.revoked(Revocation(grants: ids))) }
            return RevokeResponse(revoked: ids.count)
        }
    }

    /// The drones of a cluster with their load, and its backends by status.
    public func clusterState(_ cluster: ClusterName) async throws(ControllerError) -> ClusterStateView {
        try await withStore {
            let now = try await store.now()
            let connected = drones.connected
            let freshness = configuration.heartbeatFreshness.milliseconds
            let records = try await store.drones(cluster: cluster)
            let counts = try await store.backendCounts(cluster: cluster, recentMilliseconds: 3_600_000)
            return ClusterStateView(
                cluster: cluster.rawValue,
                drones: records.map { drone in
                    ClusterStateView.Drone(
                        name: drone.name.rawValue, pool: drone.registration.pool.rawValue,
                        connected: connected.contains(drone.name),
                        draining: drone.draining || now - drone.lastHeartbeat > freshness,
                        last_heartbeat_ms_ago: now - drone.lastHeartbeat, backends: drone.liveBackends,
                        capacity_backends: drone.registration.capacityBackends, committed_memory: drone.committedMemory,
                        capacity_memory: drone.registration.capacityMemory, load: drone.load)
                },
                backends: Dictionary(uniqueKeysWithValues: counts.map { ($0.key.description, $0.value) }))
        }
    }
}
