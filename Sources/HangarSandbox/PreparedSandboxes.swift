import CShims
import Glibc
import HangarCore
import Logging
import Synchronization

/// What is fixed when a sandbox is created, before it has a command: the spawns one
/// prepared sandbox can serve. The command, environment, working directory and fds are
/// handed over later.
struct SandboxShape: Hashable, Sendable {
    let image: Image
    let uid: UInt32
    let gid: UInt32
    let hostname: Hostname
    let upperSize: ByteSize
    let upperInodes: UInt64
    let shmSize: ByteSize
    let readOnlyRoot: Bool
    let limits: ResourceLimits
    let seccomp: SeccompProfile

    init(_ spec: SandboxSpec) {
        image = spec.image
        uid = spec.uid
        gid = spec.gid
        hostname = spec.hostname
        upperSize = spec.upperSize
        upperInodes = spec.upperInodes
        shmSize = spec.shmSize
        readOnlyRoot = spec.readOnlyRoot
        limits = spec.limits
        seccomp = spec.seccomp
    }

    /// The spec a prepared sandbox of this shape is created from: no command yet, `/` as
    /// the working directory, /dev/null as stdio (the hand-off replaces all three).
    func template(of spec: SandboxSpec) -> SandboxSpec {
        var template = spec
        template.command = ["hangar-init"]
        template.environment = []
        template.workingDirectory = "/"
        template.stdio = (PreparedPool.devNull, PreparedPool.devNull, PreparedPool.devNull)
        template.extraFDs = []
        return template
    }
}

/// A sandbox in standby: hangar-init waits on `control` for its command.
struct PreparedSandbox: Sendable {
    let sandbox: Sandbox
    let control: Int32

    /// Ends it without a command.
    func discard() {
        sandbox.kill()
        close(control)
    }
}

/// The hand-off message of one spawn (struct hg_handoff and its strings), or nil from
/// init when the spec does not fit one; that spec is then spawned anew.
struct HandOff {
    private let bytes: [UInt8]

    init?(_ spec: SandboxSpec) {
        let environment = spec.environment.map { "\($0.name)=\($0.value)" }
        let strings = [spec.workingDirectory] + spec.command + environment
        var text: [UInt8] = []
        for string in strings {
            text += string.utf8
            text.append(0)
        }
        guard text.count <= Int(HG_HANDOFF_MAX_BYTES.rawValue), strings.count <= Int(HG_HANDOFF_MAX_STRINGS.rawValue),
            spec.extraFDs.count + 4 <= Int(HG_HANDOFF_MAX_FDS.rawValue)
        else { return nil }
        var header = hg_handoff(
            magic: HG_HANDOFF_MAGIC, argc: UInt32(spec.command.count), envc: UInt32(environment.count),
            fd_count: UInt32(spec.extraFDs.count + 4), length: UInt32(text.count))
        bytes = withUnsafeBytes(of: &header) { Array($0) } + text
    }

    /// Sends the message with `fds` attached. Returns 0 or an errno (EPIPE and the like:
    /// the prepared sandbox has ended).
    func send(on socket: Int32, fds: [Int32]) -> Int32 {
        -bytes.withUnsafeBytes { hg_send_with_fds(socket, $0.baseAddress, $0.count, fds, fds.count) }
    }
}

/// Sandboxes created ahead of their spawns, per shape. One background thread keeps each
/// shape at its target; a spawn takes one and wakes it.
final class PreparedPool: Sendable {
    private struct Target {
        var count: Int
        var template: SandboxSpec
    }

    private struct State {
        var targets: [SandboxShape: Target] = [:]
        var ready: [SandboxShape: [PreparedSandbox]] = [:]
        var inFlight = 0
        var running = false
        /// Ended by add() and not yet awaited by dropAll().
        var discarded: [Sandbox] = []
    }

    /// /dev/null, stdio of sandboxes in standby.
    static let devNull: Int32 = open("/dev/null", O_RDWR | O_CLOEXEC)

    private let state = Mutex(State())
    private let wake: Int32
    private let logger: Logger

    init(logger: Logger) throws(SandboxError) {
        self.logger = logger
        wake = hg_eventfd(0)
        guard wake >= 0 else { throw .system(.host, "eventfd for the prepared-sandbox pool", errno: -wake) }
    }

    func count(_ shape: SandboxShape) -> Int {
        state.withLock { $0.ready[shape]?.count ?? 0 }
    }

    /// A prepared sandbox of this shape (it now belongs to the caller), or nil.
    func take(_ shape: SandboxShape) -> PreparedSandbox? {
        let taken = state.withLock { $0.ready[shape]?.popLast() }
        if taken != nil { signal() }
        return taken
    }

    /// Keeps `sandbox` ready if its shape is below its target; ends it otherwise.
    func add(_ sandbox: PreparedSandbox, shape: SandboxShape) {
        let kept = state.withLock { state in
            guard let target = state.targets[shape], (state.ready[shape]?.count ?? 0) < target.count else {
                state.discarded.append(sandbox.sandbox)
                return false
            }
            state.ready[shape, default: []].append(sandbox)
            return true
        }
        if !kept { sandbox.discard() }
    }

    /// Sets how many sandboxes of `shape` to keep; starts the background thread if needed.
    func setTarget(_ count: Int, for shape: SandboxShape, template: SandboxSpec, runtime: SandboxRuntime) {
        let (start, surplus) = state.withLock { state -> (Bool, [PreparedSandbox]) in
            if count == 0 {
                state.targets[shape] = nil
            } else {
                state.targets[shape] = Target(count: count, template: template)
            }
            var surplus: [PreparedSandbox] = []
            while (state.ready[shape]?.count ?? 0) > count, let extra = state.ready[shape]?.popLast() {
                surplus.append(extra)
            }
            let start = !state.running && !state.targets.isEmpty
            if start { state.running = true }
            return (start, surplus)
        }
        surplus.forEach { $0.discard() }
        if start && startThread({ self.run(runtime: runtime) }) != 0 {
            state.withLock { $0.running = false }
            logger.error("cannot start the thread that prepares sandboxes")
        }
        signal()
    }

    /// Drops every target and ends every prepared sandbox, also those being prepared now.
    func dropAll() async {
        let dropped = state.withLock { state -> [PreparedSandbox] in
            state.targets = [:]
            defer { state.ready = [:] }
            return state.ready.values.flatMap { $0 }
        }
        signal()
        for prepared in dropped {
            prepared.discard()
            _ = await prepared.sandbox.wait()
        }
        // A sandbox being prepared right now is discarded by add() when it is done.
        while state.withLock({ $0.inFlight > 0 || $0.running }) {
            try? await Task.sleep(for: .milliseconds(1))
        }
        for sandbox in state.withLock({ state in defer { state.discarded = [] }; return state.discarded }) {
            _ = await sandbox.wait()
        }
    }

    private func signal() {
        var one: UInt64 = 1
        _ = write(wake, &one, 8)
    }

    /// The background thread: prepares one sandbox at a time for the shape furthest below
    /// its target; sleeps on the eventfd when all are full; ends when no target is left.
    private func run(runtime: SandboxRuntime) {
        var backoff = 0.1
        while true {
            let job = state.withLock { state -> (SandboxShape, SandboxSpec)?? in
                if state.targets.isEmpty {
                    state.running = false
                    return .some(nil)
                }
                let missing = state.targets.map { shape, target in
                    (shape, target.template, target.count - (state.ready[shape]?.count ?? 0))
                }
                guard let most = missing.max(by: { $0.2 < $1.2 }), most.2 > 0 else { return nil }
                state.inFlight += 1
                return .some((most.0, most.1))
            }
            guard let job else {
                var value: UInt64 = 0
                _ = read(wake, &value, 8)
                continue
            }
            guard let (shape, template) = job else { return }
            do {
                let sandbox = try runtime.prepare(template)
                add(sandbox, shape: shape)
                backoff = 0.1
            } catch {
                logger.error(
                    "preparing a sandbox failed; retrying in \(backoff) s",
                    metadata: ["image": "\(shape.image.root)", "error": "\(error)"])
                // Wait, but wake up for a change of targets.
                var waiting = pollfd(fd: wake, events: Int16(POLLIN), revents: 0)
                _ = poll(&waiting, 1, Int32(backoff * 1000))
                backoff = min(backoff * 2, 30)
            }
            state.withLock { $0.inFlight -= 1 }
        }
    }
}
