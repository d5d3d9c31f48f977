import Glibc
import HangarCore
import HangarPolicy
import HangarSandbox
import Logging
import Synchronization

/// The limits of one drone. How each backend runs (its port, probe, startup timeout,
/// grace period, log buffer, idle timeout and lifetime) comes from its image's policy.
public struct DroneConfiguration: Sendable {
    /// At most this many backends at once (terminated ones do not count).
    public var maxBackends = 100
    /// The sum of the running backends' memory limits may not pass this; nil: no budget.
    public var memoryBudget: ByteSize?
    /// How often idle and lifetime limits are checked.
    public var checkInterval: Duration = .milliseconds(100)
    /// Each backend's stdout and stderr in BACKEND.log here (rotated at 16 MiB); nil:
    /// memory only.
    public var logDirectory: String? = "/var/log/hangar"
    /// Per-key data directories (for policies with `filesystem.data_dir`) are made here,
    /// one per key; nil: such policies are refused.
    public var dataRoot: String? = "/var/lib/hangar/data"
    /// A terminated backend stays in memory (its state, its logs) this long; its record
    /// stays in the store.
    public var keepTerminated: Duration = .seconds(600)

    public init() {}
}

/// Runs backends on this host: the lifecycle of each (load, spawn, probe, ready, idle and
/// lifetime limits, terminate with a grace period), within a capacity budget.
public final class Drone: Sendable {
    let runtime: SandboxRuntime
    let policies: PolicyLoader
    let images: ImageStore
    let host: Policy.HostSettings
    let configuration: DroneConfiguration
    /// Where backends and their events are recorded; nil: memory only.
    public let store: DroneStore?
    let dataDirectories: DataDirectories?
    private let backends = Mutex<[BackendID: (backend: Backend, memory: UInt64)]>([:])
    let counters = DroneCounters()
    /// One line per backend status change, with backend.id, key and image as metadata.
    let logger: Logger
    private let null = open("/dev/null", O_RDWR | O_CLOEXEC)

    public init(
        runtime: SandboxRuntime, policies: PolicyLoader, images: ImageStore, host: Policy.HostSettings = .init(),
        configuration: DroneConfiguration = .init(), store: DroneStore? = nil,
        logger: Logger = Logger(label: "hangar.drone")
    ) throws(DroneError) {
        self.store = store
        self.logger = logger
        if let directory = configuration.logDirectory {
            do {
                try makeDirectories(directory)
            } catch {
                throw DroneError("the log directory \(directory): \(error)")
            }
        }
        dataDirectories = try configuration.dataRoot.map { root throws(DroneError) in
            try DataDirectories(root: root, owner: runtime.configuration.bindOwner)
        }
        self.runtime = runtime
        self.policies = policies
        self.images = images
        self.host = host
        self.configuration = configuration
    }

    deinit { close(null) }

    /// Backends that are not terminated.
    public var running: [Backend] {
        backends.withLock { $0.values.map(\.backend) }.filter { $0.current.status != .terminated }
    }

    /// Records the backends a previous run of this drone left unterminated as terminated,
    /// reason lost (they died with it: PR_SET_PDEATHSIG, and the runtime's cgroup sweep
    /// removed what was left). Call once, at start. Returns their ids.
    public func recover() throws(DroneError) -> [BackendID] {
        try store?.recoverLost() ?? []
    }

    /// Every backend it has had, terminated ones included.
    public var allBackends: [Backend] {
        backends.withLock { $0.values.map(\.backend) }
    }

    public func backend(_ id: BackendID) -> Backend? {
        backends.withLock { $0[id]?.backend }
    }

    /// Starts a backend for `request` and returns at once (status scheduled); its
    /// lifecycle runs on. Refused beyond the drone's capacity or with a bad request. With
    /// an `id` (the controller's), a second spawn of the same id returns the first backend.
    public func spawn(_ request: SpawnRequest, id chosen: BackendID? = nil) throws(DroneError) -> Backend {
        if let chosen, let existing = backend(chosen) { return existing }
        try request.validate()
        let policy: Policy
        do {
            policy = try policies.policy(forImage: request.image).applying(request: request.limits)
        } catch {
            throw DroneError("backend for key \(request.key): \(error)")
        }
        if policy.filesystem.dataDirectory != nil {
            guard let dataDirectories else {
                throw DroneError(
                    "backend for key \(request.key): policy \(policy.name) mounts a data directory (filesystem.data_dir) and this drone has no data root")
            }
            try dataDirectories.check(key: request.key.rawValue, namespace: request.namespace)
        }
        let memory = policy.limits.memoryMax?.bytes ?? 0
        let id = chosen ?? BackendID.random()
        let logs = LogBuffer(
            capacity: Int(policy.backend.logBuffer.bytes), directory: configuration.logDirectory, name: id.rawValue)
        let image = request.image.rawValue
        let key = request.key
        let logger = logger
        let onChange: @Sendable (BackendState) -> Void = { [store] state in
            store?.record(id: id, key: key, image: image, state: state)
            Self.log(state, of: id, key: key, image: image, to: logger)
        }
        let backend = Backend(
            id: id, key: key, port: UInt16(policy.backend.port), grace: .seconds(policy.backend.grace), logs: logs,
            onChange: onChange)
        try backends.withLock { (table) throws(DroneError) in
            guard table[id] == nil else { throw DroneError("backend \(id) exists") }
            let live = table.values.filter { $0.backend.current.status != .terminated }
            guard live.count < configuration.maxBackends else {
                throw DroneError("the drone is full: \(live.count) backends of \(configuration.maxBackends)")
            }
            if let budget = configuration.memoryBudget {
                let used = live.reduce(0) { $0 + $1.memory }
                guard used + memory <= budget.bytes else {
                    throw DroneError(
                        "the drone's memory budget is \(budget): \(ByteSize(bytes: used)) is taken and this backend needs \(ByteSize(bytes: memory))")
                }
            }
            table[id] = (backend, memory)
        }
        onChange(backend.current)  // scheduled: accepted
        counters.spawned()
        Task { await run(backend, request: request, policy: policy) }
        Task { [self, keep = configuration.keepTerminated] in
            _ = await backend.terminated()
            try? await Task.sleep(for: keep)
            backends.withLock { $0[id] = nil }
        }
        return backend
    }

    /// The lifecycle of one backend.
    private func run(_ backend: Backend, request: SpawnRequest, policy: Policy) async {
        let requested = ContinuousClock.now
        backend.apply(.load)
        var spec: SandboxSpec
        do {
            spec = try self.spec(for: backend, request: request, policy: policy)
        } catch {
            return fail(backend, "loading failed: \(error)")
        }
        guard backend.apply(.spawn).1.status == .starting else { return }  // terminated while loading
        let sandbox: Sandbox
        do {
            let output = try backend.logs.pipe()
            defer { close(output) }
            let errors = try backend.logs.pipe()
            defer { close(errors) }
            spec.stdio = (null, output, errors)
            sandbox = try await runtime.spawn(spec)
        } catch {
            return fail(backend, "spawn failed: \(error)")
        }
        backend.attach(sandbox)
        let started = ContinuousClock.now
        // Its end, whenever it comes, closes the lifecycle.
        Task {
            let outcome = await sandbox.outcome()
            var code: Int32?
            if case .exited(let value) = outcome.status { code = value }
            backend.apply(.ended(exitCode: code, reason: outcome.reason == .oom ? .oom : nil))
        }
        // Terminated while it was being spawned: attach() has passed the terminate on.
        guard backend.apply(.spawned).1.status == .waiting else { return }
        switch await Readiness.outcome(
            for: sandbox, port: backend.port, probe: policy.backend.probe,
            timeout: .seconds(policy.backend.startupTimeout))
        {
        case .ready:
            break
        case .ended:
            return  // its end (exit code, oom) is applied by the task that awaits the outcome
        case .timedOut:
            backend.terminate(.startupTimeout)
            return
        }
        backend.apply(.ready)
        counters.ready(after: ContinuousClock.now - requested)
        backend.traffic.touch()  // idle from now on
        let maxIdle = policy.limits.idleTimeout.map { Duration.seconds($0) }
        let lifetime = policy.limits.wallTimeout.map { Duration.seconds($0) }
        while backend.current.status == .ready {
            try? await Task.sleep(for: configuration.checkInterval)
            if let maxIdle, backend.traffic.openConnections == 0, backend.traffic.idleFor >= maxIdle {
                backend.terminate(.idle)
            } else if let lifetime, ContinuousClock.now - started >= lifetime {
                backend.terminate(.lifetime)
            }
        }
    }

    /// A status change as a log line: scheduled, ready and terminated at info (the life of
    /// a backend in three lines), the steps between at debug.
    static func log(_ state: BackendState, of id: BackendID, key: KeyName, image: String, to logger: Logger) {
        var metadata: Logger.Metadata = [
            "backend.id": "\(id)", "key": "\(key)", "image": "\(image)", "status": "\(state.status)",
        ]
        if let reason = state.reason { metadata["reason"] = "\(reason)" }
        if let code = state.exitCode { metadata["exit_code"] = "\(code)" }
        let level: Logger.Level =
            switch state.status {
            case .scheduled, .ready, .terminated: .info
            default: .debug
            }
        logger.log(level: level, "backend \(state.status)", metadata: metadata)
    }

    /// Ends a backend that could not be loaded or spawned (internal-error), saying why in
    /// its log (and in the drone's).
    private func fail(_ backend: Backend, _ why: String) {
        counters.failed()
        logger.warning("backend failed", metadata: ["backend.id": "\(backend.id)", "key": "\(backend.key)", "error": "\(why)"])
        backend.logs.note(why)
        backend.terminate(.internalError)
        backend.apply(.ended(exitCode: nil, reason: nil))
    }

    /// The sandbox spec: the policy's, with Hangar's and Plane's variables and the key's
    /// data directory. The wall timeout is the backend's lifetime, which the lifecycle
    /// ends with a terminate (and its grace period) instead of a kill.
    func spec(for backend: Backend, request: SpawnRequest, policy: Policy) throws -> SandboxSpec {
        let image = try images.image(request.image)
        var data: String?
        if policy.filesystem.dataDirectory != nil, let dataDirectories {
            data = try dataDirectories.directory(
                forKey: request.key.rawValue, namespace: request.namespace, uid: policy.process.uid,
                gid: policy.process.gid)
        }
        var spec = try policy.spec(image: image, command: request.command, host: host, dataDirectory: data)
        spec.wallTimeout = nil
        let variables: [(String, String)] = [
            ("PORT", "\(backend.port)"), ("HANGAR_BACKEND_ID", backend.id.rawValue), ("HANGAR_KEY", request.key.rawValue),
            ("HANGAR_FENCING_TOKEN", "\(request.fencingToken)"), ("SESSION_BACKEND_ID", backend.id.rawValue),
            ("SESSION_BACKEND_KEY", request.key.rawValue), ("SESSION_BACKEND_FENCING_TOKEN", "\(request.fencingToken)"),
        ]
        for (name, value) in variables + request.environment.sorted(by: { $0.key < $1.key }) {
            spec.setEnvironment(name, value)
        }
        spec.stdio = (null, null, null)
        return spec
    }
}

