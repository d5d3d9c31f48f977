import Glibc
import HangarCore
import HangarPolicy
import HangarSandbox
import Synchronization

/// The limits and defaults of one drone.
public struct DroneConfiguration: Sendable {
    /// At most this many backends at once (terminated ones do not count).
    public var maxBackends = 100
    /// The sum of the running backends' memory limits may not pass this; nil: no budget.
    public var memoryBudget: ByteSize?
    /// The port backends listen on inside their sandbox (PORT), unless the policy says.
    public var defaultPort: UInt16 = 8080
    /// Between SIGTERM and SIGKILL.
    public var gracePeriod: Duration = .seconds(10)
    /// From spawned to ready at most; then startup-timeout.
    public var startupTimeout: Duration = .seconds(60)
    public var probe = ReadinessProbe.http
    /// How often idle and lifetime limits are checked.
    public var checkInterval: Duration = .milliseconds(100)
    /// Each backend's stdout and stderr: this much is kept in memory ...
    public var logCapacity = 1 << 20
    /// ... and everything in BACKEND.log here (rotated at 16 MiB); nil: memory only.
    public var logDirectory: String? = "/var/log/hangar"

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
    private let backends = Mutex<[String: (backend: Backend, memory: UInt64)]>([:])
    let counters = DroneCounters()
    private let null = open("/dev/null", O_RDWR | O_CLOEXEC)

    public init(
        runtime: SandboxRuntime, policies: PolicyLoader, images: ImageStore, host: Policy.HostSettings = .init(),
        configuration: DroneConfiguration = .init(), store: DroneStore? = nil
    ) {
        self.store = store
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
    public func recover() throws(DroneError) -> [String] {
        try store?.recoverLost() ?? []
    }

    /// Every backend it has had, terminated ones included.
    public var allBackends: [Backend] {
        backends.withLock { $0.values.map(\.backend) }
    }

    public func backend(_ id: String) -> Backend? {
        backends.withLock { $0[id]?.backend }
    }

    /// Starts a backend for `request` and returns at once (status scheduled); its
    /// lifecycle runs on. Refused beyond the drone's capacity or with a bad request.
    public func spawn(_ request: SpawnRequest) throws(DroneError) -> Backend {
        let policy: Policy
        do {
            policy = try policies.policy(forImage: request.image).applying(request: request.limits)
        } catch {
            throw DroneError("backend for key \(request.key): \(error)")
        }
        let memory = policy.limits.memoryMax?.bytes ?? 0
        let id = "bk-" + String(UInt64.random(in: 0...UInt64.max), radix: 16).leftPadded(16)
        let port = UInt16(policy.network.port ?? Int(configuration.defaultPort))
        let logs = LogBuffer(capacity: configuration.logCapacity, directory: configuration.logDirectory, name: id)
        let image = request.image.rawValue
        let key = request.key
        var onChange: (@Sendable (BackendState) -> Void)?
        if let store {
            onChange = { state in store.record(id: id, key: key, image: image, state: state) }
        }
        let backend = Backend(
            id: id, key: key, port: port, grace: configuration.gracePeriod, logs: logs, onChange: onChange)
        try backends.withLock { (table) throws(DroneError) in
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
        onChange?(backend.current)  // scheduled: accepted
        counters.spawned()
        Task { await run(backend, request: request, policy: policy) }
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
            counters.failed()
            backend.terminate(.internalError)
            backend.apply(.ended(exitCode: nil, reason: nil))
            return
        }
        guard backend.apply(.spawn).1.status == .starting else { return }  // terminated while loading
        let sandbox: Sandbox
        do {
            let output = try backend.logs.pipe()
            let errors = try backend.logs.pipe()
            spec.stdio = (null, output, errors)
            defer {
                close(output)
                close(errors)
            }
            sandbox = try await runtime.spawn(spec)
        } catch {
            counters.failed()
            backend.terminate(.internalError)
            backend.apply(.ended(exitCode: nil, reason: nil))
            return
        }
        backend.attach(sandbox)
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
            for: sandbox, port: backend.port, probe: configuration.probe, timeout: configuration.startupTimeout)
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
        let started = ContinuousClock.now
        while backend.current.status == .ready {
            try? await Task.sleep(for: configuration.checkInterval)
            if let maxIdle = request.maxIdle, backend.traffic.openConnections == 0, backend.traffic.idleFor >= maxIdle {
                backend.terminate(.idle)
            } else if let lifetime = request.lifetime, ContinuousClock.now - started >= lifetime {
                backend.terminate(.lifetime)
            }
        }
    }

    /// The sandbox spec: the policy's, with Hangar's and Plane's variables.
    func spec(for backend: Backend, request: SpawnRequest, policy: Policy) throws -> SandboxSpec {
        let image = try images.image(request.image)
        var spec = try policy.spec(image: image, command: request.command, host: host)
        let variables: [(String, String)] = [
            ("PORT", "\(backend.port)"), ("HANGAR_BACKEND_ID", backend.id), ("HANGAR_KEY", request.key),
            ("HANGAR_FENCING_TOKEN", "\(request.fencingToken)"), ("SESSION_BACKEND_ID", backend.id),
            ("SESSION_BACKEND_KEY", request.key), ("SESSION_BACKEND_FENCING_TOKEN", "\(request.fencingToken)"),
        ]
        for (name, value) in variables + request.environment.sorted(by: { $0.key < $1.key }) {
            spec.setEnvironment(name, value)
        }
        spec.stdio = (null, null, null)
        return spec
    }
}

extension String {
    func leftPadded(_ width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}
