import FoundationEssentials
import HangarCore
import HangarPolicy
import HangarStore
import Logging
import Synchronization

/// What the store keeps of a spawn config (opaque to it), to build the drone's order.
/// (The subdomain is a column of its own: proxies route by it.)
struct StoredSpawnConfig: Codable {
    var executable: Executable
    var max_idle_seconds: Int?
    var lifetime_limit_seconds: Int?
}

extension Controller {
    /// A connect: the key's backend (spawned false), or a new one on the best of two
    /// random drones, with a new connection token either way. Never a backend that is
    /// terminating: such a connect waits for it to end and starts the next one.
    ///
    /// A key that has its backend and the user's grant is answered without a store write;
    /// its spawn_config, which only says what to start, is then not checked against the
    /// image's policy (Plane ignores it likewise).
    public func connect(_ request: ConnectRequest, host: String? = nil) async throws(ControllerError) -> ConnectResponse {
        counters.connects.add(1, ordering: .relaxed)
        let key = request.key ?? KeyConfig(name: try! KeyName("unkeyed-" + randomHex16()))
        let spawn = request.spawn_config
        let cluster = spawn?.cluster ?? configuration.defaultCluster
        var plan = ConnectPlan(
            key: KeyRef(namespace: key.namespace, name: key.name, tag: key.tag), cluster: cluster,
            pool: spawn?.pool ?? .default, spawnConfig: nil, memory: 0, newBackend: spawn?.id ?? .random(),
            leaseSeconds: configuration.leaseSeconds, heartbeatFreshness: configuration.heartbeatFreshness.milliseconds,
            grant: GrantRequest(user: request.user, auth: try encodedAuth(request.auth)),
            choose: { _ in nil })
        let signer = try await tokenSigner()
        if case .existing(let backend, let grant) = store.connectWithoutWriting(plan) {
            return try response(backend, grant: grant, spawned: false, host: host, signer: signer)
        }
        // What a spawn needs, made only when the connect may spawn.
        var stored: StoredSpawnConfig?
        if let spawn {
            plan.memory = try memory(for: spawn)
            stored = StoredSpawnConfig(
                executable: spawn.executable, max_idle_seconds: spawn.max_idle_seconds,
                lifetime_limit_seconds: spawn.lifetime_limit_seconds)
            plan.spawnConfig = try encoded(stored)
            plan.subdomain = spawn.subdomain
            plan.clientChoseID = spawn.id != nil
            if spawn.use_static_token { plan.grant?.staticToken = "s." + randomToken() }
        }
        plan.choose = { [memory = plan.memory] in Scheduler.bestOfTwo($0, memory: memory) }

        let deadline = ContinuousClock.now + configuration.terminatingWait
        while true {
            // A store failure is logged with the error's id at the edge (ErrorMiddleware).
            let outcome = try await withStore { [plan] in try await batcher.connect(plan) }
            switch outcome {
            case .existing(let backend, let grant):
                return try response(backend, grant: grant, spawned: false, host: host, signer: signer)
            case .spawned(let backend, let action, let grant):
                counters.spawns.add(1, ordering: .relaxed)
                logger.info(
                    "backend scheduled",
                    metadata: [
                        "backend.id": "\(backend.id)", "key": "\(key.name)", "namespace": "\(key.namespace)",
                        "drone": "\(backend.drone)", "cluster": "\(backend.cluster)",
                    ])
                if let order = try? order(for: backend, action: action, kind: .spawn, stored: stored) {
                    drones.send(order, to: backend.drone)
                }
                return try response(backend, grant: grant, spawned: true, host: host, signer: signer)
            case .terminating(let id):
                guard await waitUntilTerminated(id, deadline: deadline) else {
                    throw ControllerError(
                        .keyTerminating,
                        "key \(key.name): its backend \(id) is still terminating after \(configuration.terminatingWait); try again")
                }
            case .keyHeld(let tag):
                throw ControllerError(
                    .keyHeld, "key \(key.name) is held by a backend with tag \(tag.map { "\"\($0)\"" } ?? "none"), not \(key.tag.map { "\"\($0)\"" } ?? "none")")
            case .keyUnheldNoSpawnConfig:
                throw ControllerError(.keyUnheldNoSpawnConfig, "key \(key.name) has no backend and the connect has no spawn_config")
            case .backendIDTaken(let id):
                throw ControllerError(.backendIDTaken, "spawn_config.id: backend \(id) exists")
            case .noDroneAvailable:
                throw ControllerError(
                    .noDroneAvailable,
                    "no drone of cluster \(cluster)\(plan.pool == .default ? "" : " pool \(plan.pool)") is connected, undrained and has room")
            }
        }
    }

    /// The memory a backend commits: the policy's memory_max as the connect's limits leave
    /// it (checked against the policy's maxima), or what the connect asks for.
    func memory(for spawn: SpawnConfig) throws(ControllerError) -> UInt64 {
        var limits = Policy.Limits.unset
        if let text = spawn.executable.limits?.memory_max { limits.memoryMax = try? ByteSize(parsing: text) }
        limits.pidsMax = spawn.executable.limits?.pids_max
        limits.cpu = spawn.executable.limits?.cpu
        limits.idleTimeout = spawn.max_idle_seconds
        limits.wallTimeout = spawn.lifetime_limit_seconds
        guard let policies = configuration.policies else { return limits.memoryMax?.bytes ?? 0 }
        do {
            let policy = try policies.policy(forImage: spawn.executable.image).applying(request: limits, from: "spawn_config")
            return policy.limits.memoryMax?.bytes ?? 0
        } catch {
            throw .badRequest("spawn_config.executable: \(error)")
        }
    }

    /// Waits for a backend to end; false at the deadline.
    func waitUntilTerminated(_ backend: BackendID, deadline: ContinuousClock.Instant) async -> Bool {
        let events = feed.subscribe(backend)
        if (try? await store.backend(backend))?.status == .terminated { return true }
        return await withTaskGroup(of: Bool.self) { group in
            group.addTask {
                for await event in events where event.status == .terminated { return true }
                return false
            }
            group.addTask {
                try? await Task.sleep(until: deadline)
                return false
            }
            let first = await group.next() ?? false
            group.cancelAll()
            return first
        }
    }

    /// The answer to a connect, with a new token for its grant (or the backend's static one).
    func response(
        _ backend: BackendRecord, grant: AccessGrant?, spawned: Bool, host requestHost: String?, signer: TokenSigner
    ) throws(ControllerError) -> ConnectResponse {
        guard let grant else { throw ControllerError(.internalError, "no grant for the connect") }
        let token =
            grant.staticToken
            ?? signer.token(grant: grant.id, expiresAt: wallClockMilliseconds() + configuration.tokenLifetime.milliseconds)
        let host = (backend.subdomain.map { $0 + "." } ?? "") + backend.cluster.rawValue
        return ConnectResponse(
            backend_id: backend.id.rawValue, spawned: spawned, status: backend.status.description, token: token,
            url: "\(configuration.proxyScheme)://\(host)/\(token)/", subdomain: backend.subdomain,
            secret_token: signer.secret(for: token),
            status_url: "\(configuration.publicURL ?? "http://" + (requestHost ?? "localhost"))/pub/b/\(backend.id)/status",
            drone: backend.drone.rawValue)
    }

    /// A connect's auth object as JSON with sorted keys: the same object is the same grant.
    func encodedAuth(_ auth: [String: JSONValue]) throws(ControllerError) -> String {
        auth.isEmpty ? "{}" : try encoded(auth)
    }

    /// The order a drone gets for an action; a spawn's config is read from the backend's
    /// record unless the caller has it at hand.
    func order(for backend: BackendRecord, action: Int64, kind: DroneAction.Kind, stored: StoredSpawnConfig? = nil)
        throws -> ActionOrder
    {
        var spawn: SpawnOrder?
        if kind == .spawn {
            let stored =
                try stored ?? JSONDecoder().decode(StoredSpawnConfig.self, from: Data(backend.spawnConfig.utf8))
            spawn = SpawnOrder(
                key: backend.key.name, namespace: backend.key.namespace, executable: stored.executable,
                maxIdleSeconds: stored.max_idle_seconds, lifetimeLimitSeconds: stored.lifetime_limit_seconds,
                fencingToken: backend.fencingToken)
        }
        return ActionOrder(id: action, kind: kind.rawValue, backend: backend.id, spawn: spawn)
    }

    func encoded(_ value: some Encodable) throws(ControllerError) -> String {
        do {
            return String(decoding: try JSONEncoder.api.encode(value), as: UTF8.self)
        } catch {
            throw ControllerError(.internalError, "encoding: \(error)")
        }
    }
}

/// Where a new backend goes.
enum Scheduler {
    /// Of two drones picked at random among those with room, the less loaded (by backends
    /// and committed memory against capacity): nearly the balance of "least loaded" without
    /// every connect piling onto the same drone between two heartbeats.
    static func bestOfTwo(_ candidates: [DroneRecord], memory: UInt64) -> DroneName? {
        let roomy = candidates.filter { drone in
            drone.liveBackends < drone.registration.capacityBackends
                && (drone.registration.capacityMemory == 0
                    || (drone.committedMemory <= drone.registration.capacityMemory
                        && memory <= drone.registration.capacityMemory - drone.committedMemory))
        }
        guard let first = roomy.randomElement() else { return nil }
        guard roomy.count > 1, let second = roomy.filter({ $0.name != first.name }).randomElement() else {
            return first.name
        }
        return (second.load < first.load ? second : first).name
    }
}
