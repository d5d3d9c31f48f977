/// Where a backend is in its life. Statuses only move forward, in this order; their raw
/// values are Plane's, so that they compare and sort the same on every side.
public enum BackendStatus: Int, Sendable, Codable, Comparable, CaseIterable, CustomStringConvertible {
    case scheduled = 10
    case loading = 20
    case starting = 30
    case waiting = 40
    case ready = 50
    case terminating = 60
    case hardTerminating = 65
    case terminated = 70

    public static func < (a: BackendStatus, b: BackendStatus) -> Bool { a.rawValue < b.rawValue }

    public var description: String {
        switch self {
        case .scheduled: "scheduled"
        case .loading: "loading"
        case .starting: "starting"
        case .waiting: "waiting"
        case .ready: "ready"
        case .terminating: "terminating"
        case .hardTerminating: "hard-terminating"
        case .terminated: "terminated"
        }
    }
}

/// Why a backend ended.
public enum TerminationReason: String, Sendable, Codable, CaseIterable, CustomStringConvertible {
    /// The process exited by itself (see the exit code).
    case exited
    /// Nobody was connected for max_idle_seconds.
    case idle
    /// It reached its lifetime limit.
    case lifetime
    /// The OOM killer ended it.
    case oom
    /// Someone asked for it to end.
    case external
    /// It did not answer on its port within the startup timeout.
    case startupTimeout = "startup-timeout"
    /// Its key's lease ran out.
    case keyExpired = "key-expired"
    /// Its drone lost track of it (a drone restart).
    case lost
    /// Hangar failed (a spawn error, a bug).
    case internalError = "internal-error"

    public var description: String { rawValue }
}

/// What happens to a backend; `BackendState.applying` decides what it leads to.
public enum BackendEvent: Sendable, Equatable, CustomStringConvertible {
    /// Resolving the image and policy, preparing the upper layer.
    case load
    /// The sandbox is being spawned.
    case spawn
    /// The sandbox runs; its port is being probed.
    case spawned
    /// The port answered.
    case ready
    /// Stop it, for this reason (SIGTERM, then the grace period).
    case terminate(TerminationReason)
    /// The grace period ran out: kill it.
    case graceExpired
    /// Its process ended (with an exit code when it exited by itself); `reason` says why
    /// when the supervisor knows better than "exited" (oom).
    case ended(exitCode: Int32?, reason: TerminationReason?)

    public var description: String {
        switch self {
        case .load: "load"
        case .spawn: "spawn"
        case .spawned: "spawned"
        case .ready: "ready"
        case .terminate(let reason): "terminate(\(reason))"
        case .graceExpired: "grace-expired"
        case .ended(let code, let reason): "ended(\(code.map(String.init) ?? "-"), \(reason.map(\.rawValue) ?? "-"))"
        }
    }
}

/// A backend's status with, once it is ending, why and how.
public struct BackendState: Sendable, Equatable, Codable, CustomStringConvertible {
    public private(set) var status: BackendStatus
    /// Set from `terminating` on (or at `terminated` for a backend that ended by itself).
    public private(set) var reason: TerminationReason?
    /// The exit code, when the process exited by itself.
    public private(set) var exitCode: Int32?

    public init() {
        status = .scheduled
    }

    public var description: String {
        var text = status.description
        if let reason { text += " (\(reason)" + (exitCode.map { ", exit code \($0)" } ?? "") + ")" }
        return text
    }

    /// An event that makes no sense in a status (a `ready` before `spawned`).
    public struct IllegalTransition: Error, CustomStringConvertible, Sendable {
        public let from: BackendState
        public let event: BackendEvent
        public var description: String { "backend event \(event) is not possible while \(from)" }
    }

    /// The state after `event`: the one place where statuses change, and only forward. A
    /// terminate is honoured in every status; a second one (or a late `ready`) changes
    /// nothing: the first reason stays.
    public func applying(_ event: BackendEvent) throws(IllegalTransition) -> BackendState {
        var next = self
        switch (status, event) {
        case (.scheduled, .load):
            next.status = .loading
        case (.loading, .spawn):
            next.status = .starting
        case (.starting, .spawned):
            next.status = .waiting
        case (.waiting, .ready):
            next.status = .ready

        // Nothing runs yet: it ends at once.
        case (.scheduled, .terminate(let reason)), (.loading, .terminate(let reason)):
            next.status = .terminated
            next.reason = reason
        // A spawn in flight is stopped when it returns; a running backend gets SIGTERM.
        case (.starting, .terminate(let reason)), (.waiting, .terminate(let reason)), (.ready, .terminate(let reason)):
            next.status = .terminating
            next.reason = reason
        case (.terminating, .terminate), (.hardTerminating, .terminate), (.terminated, .terminate):
            break

        case (.terminating, .graceExpired):
            next.status = .hardTerminating
        case (.hardTerminating, .graceExpired), (.terminated, .graceExpired):
            break

        case (.terminated, .ended):
            break
        case (_, .ended(let code, let reason)):
            next.status = .terminated
            // A termination already under way keeps its reason (idle, lifetime, …),
            // unless the kernel's (oom) says more.
            if let reason, reason == .oom || next.reason == nil {
                next.reason = reason
            } else if next.reason == nil {
                next.reason = .exited
            }
            next.exitCode = code

        // Late news of a backend that is already ending: nothing changes.
        case (.terminating, .ready), (.hardTerminating, .ready), (.terminated, .ready),
            (.terminating, .spawned), (.hardTerminating, .spawned), (.terminated, .spawned):
            break

        default:
            throw IllegalTransition(from: self, event: event)
        }
        assert(next.status >= status, "backend statuses only move forward")
        return next
    }
}
