import Glibc
import HangarCore
import HangarPolicy
import HangarSandbox
import Synchronization

/// What a client asks a drone to run.
public struct SpawnRequest: Sendable {
    /// The key the backend holds.
    public var key: KeyName
    /// The key's namespace (its data directory is the namespace's own).
    public var namespace: NamespaceName = .default
    public var image: ImageName
    /// The command; nil: the policy's.
    public var command: [String]?
    /// More environment, on top of the policy's and Hangar's own variables.
    public var environment: [String: String] = [:]
    /// Limits asked for, within the policy's maxima; among them `idleTimeout` (Plane's
    /// max_idle_seconds) and `wallTimeout` (the backend's lifetime).
    public var limits = Policy.Limits.unset
    /// The key's fencing token, passed to the backend.
    public var fencingToken: UInt64 = 1

    public init(key: KeyName, image: ImageName) {
        self.key = key
        self.image = image
    }

    /// Checks what no policy can: the command and the environment.
    public func validate() throws(DroneError) {
        if let command, let problem = BackendCommand.problem(command) { throw DroneError("command: must be \(problem)") }
        for (name, value) in environment.sorted(by: { $0.key < $1.key }) {
            if let problem = BackendEnvironment.problem(name: name, value: value) { throw DroneError("env.\(problem)") }
        }
    }
}

/// One backend on this drone: a sandbox through the ordered statuses of `BackendState`.
public final class Backend: Sendable {
    public let id: BackendID
    public let key: KeyName
    /// Its connections and their activity, for idle shutdown.
    public let traffic = Traffic()
    /// Its stdout and stderr.
    public let logs: LogBuffer
    private let state = Mutex(BackendState())
    private let history = Mutex<[(status: BackendStatus, at: ContinuousClock.Instant)]>([(.scheduled, .now)])
    private let sandbox = Mutex<Sandbox?>(nil)
    /// Waiting for a status (or any later one).
    private let waiters = Mutex<[(status: BackendStatus, continuation: CheckedContinuation<BackendState, Never>)]>([])
    let port: UInt16
    let grace: Duration
    /// Told of every status change (the drone's store), outside the state lock.
    let onChange: (@Sendable (BackendState) -> Void)?

    init(
        id: BackendID, key: KeyName, port: UInt16, grace: Duration, logs: LogBuffer,
        onChange: (@Sendable (BackendState) -> Void)? = nil
    ) {
        self.logs = logs
        self.onChange = onChange
        self.id = id
        self.key = key
        self.port = port
        self.grace = grace
    }

    /// The current state.
    public var current: BackendState { state.withLock { $0 } }

    /// Every status it has been in, in order.
    public var statuses: [BackendStatus] { history.withLock { $0.map(\.status) } }

    /// Every status it has been in, in order, with when it got there.
    public var timeline: [(status: BackendStatus, at: ContinuousClock.Instant)] { history.withLock { $0 } }

    /// A connection to its port inside its network namespace, counted in `traffic` while
    /// carried with `carry`. Only while ready.
    public func connect() throws(DroneError) -> Int32 {
        guard current.status == .ready, let sandbox = sandbox.withLock({ $0 }) else {
            throw DroneError("backend \(id) is \(current), not ready")
        }
        do {
            return try sandbox.connect(port: port)
        } catch {
            throw DroneError("backend \(id): \(error)")
        }
    }

    /// What its cgroup counts so far, while it has a sandbox.
    public func statistics() -> CgroupStatistics? {
        sandbox.withLock { $0 }?.statistics()
    }

    /// Stops it for `reason`: SIGTERM to its init, and after the grace period SIGKILL. Honoured
    /// in every status; a later reason does not replace the first.
    public func terminate(_ reason: TerminationReason) {
        let (before, after) = apply(.terminate(reason))
        guard before.status < .terminating, after.status == .terminating else { return }
        if let sandbox = sandbox.withLock({ $0 }) {
            sandbox.signal(SIGTERM)
        }
        let grace = self.grace
        Task { [self] in
            try? await Task.sleep(for: grace)
            let (_, now) = apply(.graceExpired)
            if now.status == .hardTerminating { sandbox.withLock { $0 }?.kill() }
        }
    }

    /// Kills it at once (SIGKILL to the whole sandbox), for `reason` unless it was already
    /// terminating for another.
    public func kill(_ reason: TerminationReason) {
        apply(.terminate(reason))
        let (before, after) = apply(.graceExpired)
        if before.status < .hardTerminating, after.status == .hardTerminating { sandbox.withLock { $0 }?.kill() }
    }

    /// Waits until it is terminated; its final state.
    public func terminated() async -> BackendState {
        await reached(.terminated)
    }

    /// Waits until it has reached `status` or a later one; the state then.
    public func reached(_ status: BackendStatus) async -> BackendState {
        await withCheckedContinuation { continuation in
            let now = state.withLock { state -> BackendState? in
                if state.status >= status { return state }
                waiters.withLock { $0.append((status, continuation)) }
                return nil
            }
            if let now { continuation.resume(returning: now) }
        }
    }

    /// Applies an event; returns the state before and after. An event that makes no
    /// sense leaves the state as it is (the lifecycle and a terminate can cross).
    @discardableResult
    func apply(_ event: BackendEvent) -> (BackendState, BackendState) {
        let (before, after, woken) = state.withLock { state -> (BackendState, BackendState, [CheckedContinuation<BackendState, Never>]) in
            let before = state
            if let next = try? state.applying(event) { state = next }
            var woken: [CheckedContinuation<BackendState, Never>] = []
            if state.status != before.status {
                let status = state.status
                history.withLock { $0.append((status, .now)) }
                woken = waiters.withLock { list in
                    let due = list.filter { $0.status <= status }.map(\.continuation)
                    list.removeAll { $0.status <= status }
                    return due
                }
            }
            return (before, state, woken)
        }
        if after.status != before.status { onChange?(after) }
        woken.forEach { $0.resume(returning: after) }
        return (before, after)
    }

    /// The sandbox, once spawned. A terminate that came while it was being spawned found
    /// no sandbox to signal: it gets SIGTERM now, and the pending grace period kills it.
    func attach(_ sandbox: Sandbox) {
        self.sandbox.withLock { $0 = sandbox }
        switch current.status {
        case .terminating: sandbox.signal(SIGTERM)
        // The grace period ran out before there was a sandbox to kill.
        case .hardTerminating, .terminated: sandbox.kill()
        default: break
        }
    }
}

/// A drone refused or failed a request; the message says what and why.
public struct DroneError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}
