import CShims
import Glibc
import HangarCore
import Logging
import Synchronization

/// Configuration of the sandbox runtime of one process (a drone, `hangar run`).
public struct SandboxRuntimeConfiguration: Sendable {
    /// Directory for runtime state: the mount point of the spawning thread's own root
    /// (an empty directory on the host) and the uid slot locks. Nothing is left in it per
    /// sandbox. Default: /run/hangar.
    public var stateDirectory: String = "/run/hangar"
    /// The hangar-init executable; nil: `HANGAR_INIT`, else next to the running executable.
    public var initPath: String?
    /// Name of the cgroup under this process's own cgroup that holds sandbox groups.
    public var cgroupParent: String = "hangar"
    /// Where `cgroupParent` lives instead of this process's own cgroup: a path relative to
    /// the cgroup mount (each v1 hierarchy's, or the unified one), e.g. "/hangar.slice".
    public var cgroupRoot: String?
    /// The cgroup driver: v2 where it has the memory controller, else v1 (`auto`).
    public var cgroupDriver: CgroupDriverChoice = .auto
    /// On-disk owner of what sandboxes write into read-write binds (data directories): uid
    /// and gid `bindOwner + k` on disk is uid k inside. An unprivileged range, so that
    /// nothing a sandbox writes is owned by host root (a setuid file there would be one),
    /// away from the usual /etc/subuid ranges (100000 up) and from the sandboxes' own
    /// ranges (2^30 up). Read-write bind sources must be owned by it to be writable inside.
    public var bindOwner: UInt32 = 900_000_000
    /// Where upper layers on disk (`upper = .disk`) are created; their files are unlinked
    /// at once (a loop device holds them), so nothing stays here.
    public var diskDirectory: String = "/var/lib/hangar/uppers"
    /// Network namespaces kept ready for spawns; 0 makes each one during its spawn.
    public var networkNamespacePool: Int = 4

    /// The defaults above.
    public init() {}

    /// The defaults, with `HANGAR_CGROUP` (auto, v1, v2, none), `HANGAR_CGROUP_ROOT` and
    /// `HANGAR_CGROUP_PARENT` (so that two drones on one host keep apart) applied. An
    /// unknown driver name is an error.
    public static func fromEnvironment() throws(SandboxError) -> SandboxRuntimeConfiguration {
        var configuration = SandboxRuntimeConfiguration()
        if let value = getenv("HANGAR_CGROUP").map({ String(cString: $0) }) {
            guard let choice = CgroupDriverChoice(rawValue: value) else {
                throw .invalid("HANGAR_CGROUP", "expected auto, v1, v2 or none, got \"\(value)\"")
            }
            configuration.cgroupDriver = choice
        }
        if let root = getenv("HANGAR_CGROUP_ROOT") { configuration.cgroupRoot = String(cString: root) }
        if let parent = getenv("HANGAR_CGROUP_PARENT").map({ String(cString: $0) }) {
            guard !parent.isEmpty, !parent.contains("/"), parent != ".", parent != ".." else {
                throw .invalid("HANGAR_CGROUP_PARENT", "one cgroup name without \"/\", got \"\(parent)\"")
            }
            configuration.cgroupParent = parent
        }
        return configuration
    }
}

/// Creates sandboxes. One per process: it holds hangar-init (as a sealed memfd, so a
/// sandbox can never write to the binary on the host), the compiled seccomp programs,
/// the pidfd reaper, and the cgroup hierarchy.
public final class SandboxRuntime: Sendable {
    public let configuration: SandboxRuntimeConfiguration
    let logger: Logger
    let initFD: Int32
    let reaper: Reaper
    let capLast: Int32
    let cgroups: (any CgroupDriver)?
    let networkNamespaces: NetworkNamespacePool
    let idRanges: IDRangePool
    private let mountPlans = Mutex<[MountPlanKey: CMountPlan]>([:])
    private let programs = Mutex<[SeccompProfile: [[UInt8]]]>([:])
    let prepared: PreparedPool

    /// Where the spawning thread mounts its minimal root (in its own mount namespace).
    var spawnRoot: String { configuration.stateDirectory + "/spawn-root" }

    /// Prepares the runtime: state directories, hangar-init, the reaper.
    public init(configuration: SandboxRuntimeConfiguration = .init(), logger: Logger) throws(SandboxError) {
        guard geteuid() == 0 else {
            throw SandboxError(.host, "hangar needs root to create sandboxes (namespaces, idmapped mounts, cgroups)")
        }
        self.configuration = configuration
        self.logger = logger
        for directory in [
            configuration.stateDirectory, configuration.stateDirectory + "/spawn-root",
            configuration.stateDirectory + "/ids",
        ] {
            try makeDirectories(directory)
        }
        let initPath = configuration.initPath ?? Self.defaultInitPath()
        let fd = hg_sealed_exec_copy(initPath, "hangar-init")
        guard fd >= 0 else {
            throw .system(.host, "loading hangar-init from \(initPath) (set HANGAR_INIT)", errno: -fd)
        }
        self.initFD = fd
        self.reaper = try Reaper()
        self.capLast = hg_cap_last()
        self.cgroups = try Cgroups.driver(
            configuration.cgroupDriver, parentName: configuration.cgroupParent, root: configuration.cgroupRoot)
        cgroups?.sweep()
        self.networkNamespaces = NetworkNamespacePool(size: configuration.networkNamespacePool)
        self.idRanges = IDRangePool(lockDirectory: configuration.stateDirectory + "/ids")
        self.prepared = try PreparedPool(logger: logger)
    }

    deinit { close(initFD) }

    static func defaultInitPath() -> String {
        if let path = getenv("HANGAR_INIT") { return String(cString: path) }
        return nextToExecutable("hangar-init")
    }

    /// The BPF programs of `profile`, compiled on first use.
    func programs(for profile: SeccompProfile) throws(SandboxError) -> [[UInt8]] {
        if let cached = programs.withLock({ $0[profile] }) { return cached }
        let compiled = try profile.compile()
        programs.withLock { $0[profile] = compiled }
        return compiled
    }

    /// The mount plan of `spec` (its /dev/shm size and own mounts), laid out in C memory once.
    private func mountPlan(for spec: SandboxSpec) -> CMountPlan {
        let key = MountPlanKey(shmSize: spec.shmSize.bytes, mounts: spec.mounts)
        return mountPlans.withLock { plans in
            if let plan = plans[key] { return plan }
            let plan = CMountPlan(MountPlan.steps(shmSize: key.shmSize, extra: key.mounts))
            plans[key] = plan
            return plan
        }
    }

    /// Creates a sandbox and starts `spec.command` in it. Returns once the command has
    /// been executed; a failure of any setup step (or of the exec) throws, leaving
    /// nothing behind. When a sandbox of the spec's shape has been prepared ahead
    /// (`keepPrepared`), the command is handed to it instead.
    public func spawn(_ spec: SandboxSpec) async throws(SandboxError) -> Sandbox {
        try spec.validate()
        if let message = HandOff(spec), let ready = prepared.take(SandboxShape(spec)) {
            if let sandbox = try await handOff(message, to: ready, spec: spec) {
                if let timeout = spec.wallTimeout { sandbox.killAfter(timeout) }
                return sandbox
            }
            logger.debug("a prepared sandbox was gone before its hand-off", metadata: ["sandbox.id": "\(ready.sandbox.id)"])
        }
        // The spawn blocks until the child has set itself up and executed init, and then
        // until init has executed the command: on a thread for blocking work.
        let (sandbox, report) = try await BlockingPool.shared.run { [self] () throws(SandboxError) -> (Sandbox, Report) in
            let (sandbox, reportFD) = try create(spec, initArguments: ["run", "\(3 + spec.extraFDs.count)"] + spec.command)
            return (sandbox, Self.awaitExec(reportFD: reportFD))
        }
        if case .failed(let failure) = report {
            sandbox.kill()
            _ = await sandbox.wait()
            throw describeFailure(failure, spec: spec)
        }
        if let timeout = spec.wallTimeout { sandbox.killAfter(timeout) }
        logger.debug(
            "sandbox started",
            metadata: ["sandbox.id": "\(sandbox.id)", "sandbox.pid": "\(sandbox.pid)", "image": "\(spec.image.root)"])
        return sandbox
    }

    /// Network namespaces made ahead and not yet used (each an open fd of this process).
    public var preparedNetworkNamespaceCount: Int { networkNamespaces.count }

    /// How many sandboxes can be in creation at once, each on a spawning thread of its own.
    public static var spawningThreads: Int { Int(hg_spawners_max()) }

    /// The most sandboxes that were in creation at once since the last call with `reset`.
    public static func concurrentSpawnsPeak(reset: Bool = false) -> Int {
        Int(hg_spawners_peak(reset ? 1 : 0))
    }

    /// Lets creation use only `count` spawning threads (benchmarks compare with one).
    public static func limitSpawningThreads(to count: Int) {
        hg_spawners_limit(Int32(clamping: count))
    }

    /// Keeps `count` sandboxes shaped like `spec` (its image, identity, hostname, layer
    /// sizes, limits and seccomp profile) created ahead, complete but for the command. A
    /// spawn of that shape then only hands its command, environment, working directory and
    /// fds to one, and another is prepared in the background. Prepares the first one
    /// before returning, so that a spec that cannot be created fails here. 0 stops.
    public func keepPrepared(_ count: Int, like spec: SandboxSpec) throws(SandboxError) {
        guard (0...1024).contains(count) else { throw .invalid("prepared count", "must be 0...1024, got \(count)") }
        let shape = SandboxShape(spec)
        let template = shape.template(of: spec)
        let first = count > 0 && prepared.count(shape) == 0 ? try prepare(template) : nil
        prepared.setTarget(count, for: shape, template: template, runtime: self)
        if let first { prepared.add(first, shape: shape) }
    }

    /// How many sandboxes shaped like `spec` are ready for a hand-off.
    public func preparedCount(like spec: SandboxSpec) -> Int {
        prepared.count(SandboxShape(spec))
    }

    /// Removes this runtime's own (empty) cgroup directory; call when no sandbox of it
    /// is left. A runtime that is killed instead leaves it to the next one's sweep.
    public func finish() {
        cgroups?.removeRuntimeDirectory()
    }

    /// Stops preparing sandboxes and ends every prepared one; returns once they are gone
    /// and their host resources released.
    public func dropPrepared() async {
        await prepared.dropAll()
    }

    /// Creates a sandbox in standby: hangar-init waits on a control socket for a hand-off.
    func prepare(_ template: SandboxSpec) throws(SandboxError) -> PreparedSandbox {
        var sockets: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_SEQPACKET.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &sockets) == 0 else {
            throw .system(.host, "socketpair for a prepared sandbox", errno: errno)
        }
        var spec = template
        spec.extraFDs = [sockets[1]]
        let created: (Sandbox, Int32)
        do {
            defer { close(sockets[1]) }
            created = try create(spec, initArguments: ["standby", "4", "3"], prepared: true)
        } catch {
            close(sockets[0])
            throw error
        }
        let (sandbox, readyFD) = created
        if case .failed(let failure) = Self.awaitExec(reportFD: readyFD) {
            sandbox.kill()
            close(sockets[0])
            throw describeFailure(failure, spec: spec)
        }
        return PreparedSandbox(sandbox: sandbox, control: sockets[0])
    }

    /// Gives `spec`'s command to a prepared sandbox. nil: it had ended (the caller spawns
    /// anew); throws when the command could not be started in it.
    private func handOff(_ message: HandOff, to ready: PreparedSandbox, spec: SandboxSpec) async throws(SandboxError) -> Sandbox? {
        let report: (read: Int32, write: Int32)
        do {
            report = try makePipe()
        } catch {
            ready.discard()
            throw error
        }
        // It was created at nice 19 (background work); the command runs at normal priority.
        _ = hg_set_nice(ready.sandbox.pid, 0)
        let fds = [spec.stdio.input, spec.stdio.output, spec.stdio.error] + spec.extraFDs + [report.write]
        let sent = message.send(on: ready.control, fds: fds)
        close(report.write)
        close(ready.control)
        guard sent == 0 else {
            ready.sandbox.kill()
            close(report.read)
            return nil
        }
        let reportFD = report.read
        switch await BlockingPool.shared.run({ Self.awaitExec(reportFD: reportFD, handOff: true) }) {
        case .executed: break
        case .gone:
            ready.sandbox.kill()
            return nil
        case .failed(let failure):
            ready.sandbox.kill()
            _ = await ready.sandbox.wait()
            throw describeFailure(failure, spec: spec)
        }
        logger.debug(
            "sandbox started from a prepared one",
            metadata: ["sandbox.id": "\(ready.sandbox.id)", "sandbox.pid": "\(ready.sandbox.pid)", "image": "\(spec.image.root)"])
        return ready.sandbox
    }

    /// Creates the sandbox of `spec` with hangar-init running `initArguments` in it.
    /// Returns once init runs, with the read end of the report pipe.
    private func create(_ spec: SandboxSpec, initArguments: [String], prepared: Bool = false) throws(SandboxError) -> (Sandbox, Int32) {
        let programs = try programs(for: spec.seccomp)
        let id = SandboxID.random()
        let ids = try idRanges.acquire()
        // A sandbox with limits gets a cgroup (which also gives its statistics). Without
        // limits it gets none: joining a group is not free (on v1 the first migration after
        // a quiet spell waits for an RCU grace period, milliseconds here), and the pid
        // namespace already ends everything in it.
        var group: (any SandboxCgroup)?
        if let cgroups, !spec.limits.isEmpty {
            do {
                group = try cgroups.create(name: id.rawValue, limits: spec.limits)
            } catch {
                idRanges.release(ids)
                throw error
            }
        } else if !spec.limits.isEmpty {
            idRanges.release(ids)
            throw SandboxError(.host, "resource limits need cgroups, and this runtime has none (cgroup driver: \(configuration.cgroupDriver))")
        }
        // A prepared network namespace, or (-1) the spawning thread makes one.
        let netns = networkNamespaces.take() ?? -1
        let resources = SandboxResources(ids: ids, pool: idRanges, cgroup: group, networkNamespace: netns)
        var disk: DiskUpper?
        if spec.upper == .disk {
            do {
                disk = try DiskUpper(
                    directory: configuration.diskDirectory, name: id.rawValue, size: spec.upperSize,
                    inodes: spec.upperInodes)
            } catch {
                resources.release()
                throw error
            }
        }
        // Host paths to bind, opened now without following symlinks: a path checked against
        // the operator's allowed directories cannot be swapped for a symlink before the bind.
        var hostBindFDs: [Int32] = []
        defer { hostBindFDs.forEach { close($0) } }
        for bind in MountPlan.hostBinds(of: spec.mounts) {
            let fd = hg_open_path_no_symlinks(bind.source)
            guard fd >= 0 else {
                resources.release()
                disk?.release()
                let hint = -fd == ELOOP ? " (a bind source may not contain symlinks)" : ""
                throw .system(.setup, "opening the bind source \(bind.source)\(hint)", errno: -fd)
            }
            hostBindFDs.append(fd)
        }
        var result = hg_spawn_result()
        let plan = mountPlan(for: spec)
        let status = withSpawnArguments(
            spec: spec, initArguments: ["hangar-init"] + initArguments, mounts: plan, programs: programs, ids: ids,
            cgroup: group, netns: netns, stagingDevice: disk?.device, hostBindFDs: hostBindFDs, background: prepared
        ) {
            hg_spawn($0, &result)
        }
        // The sandbox's mount holds the device now (or, after a failure, nothing does).
        disk?.release()
        if status != 0 {
            resources.release()
            throw describeFailure(result.failure, spec: spec)
        }
        if result.netns_fd >= 0 { resources.adopt(networkNamespace: result.netns_fd) }
        let sandbox = Sandbox.supervise(
            id: id, pid: result.pid, pidfd: result.pidfd, reaper: reaper, resources: resources, prepared: prepared)
        return (sandbox, result.report_fd)
    }

    /// What the report pipe said.
    enum Report: @unchecked Sendable {
        /// EOF: the command (or, in standby, init) was executed.
        case executed
        /// A setup step or the exec failed.
        case failed(hg_report)
        /// A hand-off was not accepted: the prepared sandbox had ended.
        case gone
    }

    /// Reads the report pipe until hangar-init has executed the command (EOF) or says why
    /// not. After a hand-off, init's acceptance comes first.
    static func awaitExec(reportFD: Int32, handOff: Bool = false) -> Report {
        defer { close(reportFD) }
        var awaitingAcceptance = handOff
        while true {
            var pending = pollfd(fd: reportFD, events: Int16(POLLIN), revents: 0)
            // hangar-init forks and executes at once; ten seconds is a wedged machine.
            guard poll(&pending, 1, 10_000) == 1 else {
                return .failed(hg_report(step: SetupStep.initSetup.rawValue, error: ETIMEDOUT, detail: -1))
            }
            var report = hg_report()
            let n = withUnsafeMutableBytes(of: &report) { read(reportFD, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            let record = n == MemoryLayout<hg_report>.size ? report : nil
            if awaitingAcceptance {
                guard record?.step == 0 else { return record.map { .failed($0) } ?? .gone }
                awaitingAcceptance = false
                continue
            }
            return record.map { $0.step != 0 ? .failed($0) : .executed } ?? .executed
        }
    }

    private func describeFailure(_ failure: hg_report, spec: SandboxSpec) -> SandboxError {
        let mounts = mountPlan(for: spec).steps
        let err = failure.error
        guard let step = SetupStep(rawValue: failure.step) else {
            return SandboxError(.setup, "sandbox setup failed at step \(failure.step): \(errnoName(err))", errno: err)
        }
        let message: String
        switch step {
        case .exec:
            let command = spec.command[0]
            message =
                err == ENOENT
                ? "command not found in the sandbox: \(command)" : "cannot execute \(command): \(errnoName(err))"
            return SandboxError(.exec, message, step: step, errno: err)
        case .mount where mounts.indices.contains(Int(failure.detail)):
            let mount = mounts[Int(failure.detail)]
            let what = mount.kind == .symlink ? "creating symlink" : "mounting \(mount.source) on"
            var hint = ""
            if err == ELOOP || err == EXDEV {
                hint = " (the image has a symlink at /\(mount.target) or on its path; mount points must be real)"
            } else if err == ENOTDIR {
                hint = " (a component of /\(mount.target) in the image is not a directory)"
            }
            message = "\(what) /\(mount.target) failed: \(errnoName(err))\(hint)"
        case .overlay:
            message = "overlay mount failed: \(errnoName(err)) (lower \(spec.image.root))"
        case .staging:
            message = "the upper layer (\(spec.upper == .disk ? "ext4 on a loop device" : "tmpfs")) failed: \(errnoName(err))"
        case .image:
            message = "idmapped mount of the image failed: \(errnoName(err)) (\(spec.image.root))"
        case .workdir:
            message = "working directory \(spec.workingDirectory) failed: \(errnoName(err))"
        case .hostname:
            message = "sethostname \(spec.hostname) failed: \(errnoName(err))"
        case .hostBind:
            let binds = MountPlan.hostBinds(of: spec.mounts)
            let source = binds.indices.contains(Int(failure.detail)) ? binds[Int(failure.detail)].source : "?"
            message = "binding host path \(source) failed: \(errnoName(err))"
        case .rlimit where spec.rlimits.indices.contains(Int(failure.detail)):
            let limit = spec.rlimits[Int(failure.detail)]
            message = "setting the \(limit.resource) limit to \(limit.value) failed: \(errnoName(err))"
        case .landlock:
            let paths = spec.writablePaths
            let path = paths.indices.contains(Int(failure.detail)) ? " (writable path \(paths[Int(failure.detail)]))" : ""
            message = "the Landlock domain failed: \(errnoName(err))\(path)"
        default:
            message = "sandbox setup failed at \(step): \(errnoName(err))"
        }
        return SandboxError(.setup, message, step: step, errno: err)
    }

    /// Lays the spawn arguments out in C memory that lives until `body` returns.
    private func withSpawnArguments(
        spec: SandboxSpec, initArguments: [String], mounts: CMountPlan, programs: [[UInt8]], ids: IDRange,
        cgroup: (any SandboxCgroup)?, netns: Int32, stagingDevice: String?, hostBindFDs: [Int32], background: Bool,
        _ body: (UnsafePointer<hg_spawn_args>) -> Int32
    ) -> Int32 {
        let arena = CArena()
        defer { arena.release() }
        let staging = "/staging"
        let environment = spec.environment.map { "\($0.name)=\($0.value)" }
        let filters = programs.flatMap { $0 }
        let lengths = programs.map { UInt16($0.count / 8) }
        var args = hg_spawn_args()
        args.image = arena.string(spec.image.root)
        args.spawn_root = arena.string(spawnRoot)
        args.staging = arena.string(staging)
        args.staging_device = stagingDevice.map { arena.string($0) }
        args.staging_options = arena.string(
            "size=\(spec.upperSize.bytes),nr_inodes=\(spec.upperInodes),mode=0755")
        args.overlay_options = arena.string(
            "lowerdir=\(staging)/lower,upperdir=\(staging)/upper,workdir=\(staging)/work")
        args.lower_dir = arena.string(staging + "/lower")
        args.upper_dir = arena.string(staging + "/upper")
        args.work_dir = arena.string(staging + "/work")
        args.root_dir = arena.string(staging + "/root")
        args.readonly_root = spec.readOnlyRoot ? 1 : 0
        args.mounts = UnsafePointer(mounts.array)
        args.mount_count = mounts.steps.count
        args.uid_map = arena.string(ids.mapText)
        args.gid_map = arena.string(ids.mapText)
        args.uid = spec.uid
        args.gid = spec.gid
        args.hostname = arena.string(spec.hostname.rawValue)
        args.stdio = (spec.stdio.input, spec.stdio.output, spec.stdio.error)
        args.keep_fds = UnsafePointer(arena.array(spec.extraFDs))
        args.keep_fd_count = spec.extraFDs.count
        args.cgroup_dirfd = cgroup?.directoryFD ?? -1
        let cgroupFDs = cgroup?.joinFDs ?? []
        args.cgroup_fds = UnsafePointer(arena.array(cgroupFDs))
        args.cgroup_fd_count = cgroupFDs.count
        args.workdir = arena.string(spec.workingDirectory)
        args.init_fd = initFD
        args.argv = UnsafePointer(arena.stringArray(initArguments))
        args.envp = UnsafePointer(arena.stringArray(environment))
        args.seccomp_filters = UnsafeRawPointer(arena.array(filters))
        args.seccomp_lengths = UnsafePointer(arena.array(lengths))
        args.seccomp_count = programs.count
        args.cap_last = capLast
        // The network namespace: a prepared one in netns_fd, or (-1) one the spawning thread makes.
        let namespaces: [hg_namespace] = [HG_NS_PID, HG_NS_MOUNT, HG_NS_IPC, HG_NS_UTS, HG_NS_CGROUP]
        args.clone_flags = Int32(namespaces.reduce(0) { $0 | $1.rawValue })
        args.netns_fd = netns
        let binds = zip(MountPlan.hostBinds(of: spec.mounts), hostBindFDs).map {
            hg_host_bind(source_fd: $1, attrs: $0.attributes, owned: $0.owned ? 1 : 0)
        }
        args.host_binds = UnsafePointer(arena.array(binds))
        args.bind_owner_map = arena.string("\(configuration.bindOwner) \(ids.hostBase) \(ids.count)\n")
        args.host_bind_count = binds.count
        let rlimits = spec.rlimits.map { hg_rlimit(resource: $0.resource.rawValue, value: $0.value) }
        args.rlimits = UnsafePointer(arena.array(rlimits))
        args.rlimit_count = rlimits.count
        args.umask = spec.umask
        args.keep_caps = spec.keepCapabilities.reduce(0) { $0 | (1 << UInt64($1.number)) }
        args.seccomp_log = spec.seccomp.logDenied ? 1 : 0
        if spec.landlock {
            let writable = spec.writablePaths
            args.writable_paths = UnsafePointer(
                UnsafeRawPointer(arena.stringArray(writable)).assumingMemoryBound(to: UnsafePointer<CChar>?.self))
            args.writable_path_count = writable.count
        }
        args.background = background ? 1 : 0
        return withUnsafePointer(to: &args) { body($0) }
    }
}

/// What a sandbox holds on the host until it is reaped.
final class SandboxResources: Sendable {
    private let state: Mutex<(ids: IDRange?, cgroup: (any SandboxCgroup)?, networkNamespace: Int32)>
    private let pool: IDRangePool

    init(ids: IDRange, pool: IDRangePool, cgroup: (any SandboxCgroup)?, networkNamespace: Int32) {
        state = Mutex((ids, cgroup, networkNamespace))
        self.pool = pool
    }

    /// A duplicate of the sandbox's network namespace fd (the caller closes it), or nil
    /// once released.
    func duplicateNetworkNamespace() -> Int32? {
        state.withLock { state in
            guard state.networkNamespace >= 0 else { return nil }
            let copy = fcntl(state.networkNamespace, F_DUPFD_CLOEXEC, 3)
            return copy >= 0 ? copy : nil
        }
    }

    /// The network namespace the spawning thread made for the sandbox.
    func adopt(networkNamespace fd: Int32) {
        state.withLock { $0.networkNamespace = fd }
    }

    /// What the kernel counted in the sandbox's cgroup (nothing without one).
    func statistics() -> CgroupStatistics {
        state.withLock { $0.cgroup }?.statistics() ?? CgroupStatistics()
    }

    /// Removes the cgroups, closes the network namespace and frees the uid range; safe
    /// to call twice.
    func release() {
        let (ids, cgroup, netns) = state.withLock { state in
            defer { state = (nil, nil, -1) }
            return state
        }
        cgroup?.destroy()
        if netns >= 0 { close(netns) }
        if let ids { pool.release(ids) }
    }
}

/// C memory for one spawn's arguments, freed all at once.
final class CArena {
    private var copies: [UnsafeMutablePointer<CChar>] = []
    private var allocations: [UnsafeMutableRawPointer] = []

    func string(_ s: String) -> UnsafePointer<CChar> {
        let copy = strdup(s)!
        copies.append(copy)
        return UnsafePointer(copy)
    }

    /// A NULL-terminated array of strings (nil entries stay NULL).
    func stringArray(_ strings: [String?]) -> UnsafeMutablePointer<UnsafeMutablePointer<CChar>?> {
        let array = UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>.allocate(capacity: strings.count + 1)
        allocations.append(UnsafeMutableRawPointer(array))
        for (index, s) in strings.enumerated() {
            array[index] = s.map { UnsafeMutablePointer(mutating: string($0)) }
        }
        array[strings.count] = nil
        return array
    }

    func stringArray(_ strings: [String]) -> UnsafeMutablePointer<UnsafeMutablePointer<CChar>?> {
        stringArray(strings.map { Optional($0) })
    }

    func array<T>(_ values: [T]) -> UnsafeMutablePointer<T> {
        let pointer = UnsafeMutablePointer<T>.allocate(capacity: max(values.count, 1))
        allocations.append(UnsafeMutableRawPointer(pointer))
        pointer.initialize(from: values, count: values.count)
        return pointer
    }

    func release() {
        copies.forEach { free($0) }
        allocations.forEach { $0.deallocate() }
        copies = []
        allocations = []
    }
}

/// A mount plan as the C structs the shim reads, allocated once and kept.
final class CMountPlan: @unchecked Sendable {
    let steps: [MountStep]
    let array: UnsafeMutablePointer<hg_mount>
    private let arena = CArena()

    init(_ steps: [MountStep]) {
        self.steps = steps
        let arena = self.arena
        array = arena.array(
            steps.map { step in
                hg_mount(
                    kind: step.kind.rawValue, flags: step.flags.rawValue, attrs: step.attributes,
                    source: arena.string(step.source), target: arena.string(step.target),
                    options: step.options.isEmpty
                        ? nil
                        : UnsafeRawPointer(arena.stringArray(step.options.flatMap { [$0.0, $0.1] }))
                            .assumingMemoryBound(to: UnsafePointer<CChar>?.self),
                    tree: step.tree)
            })
    }

    deinit { arena.release() }
}

/// What a mount plan depends on.
struct MountPlanKey: Hashable {
    let shmSize: UInt64
    let mounts: [SandboxMount]
}

/// mkdir -p: `path` and its missing parents, mode 0755 (a relative path from the working
/// directory).
public func makeDirectories(_ path: String) throws(SandboxError) {
    var prefix = path.hasPrefix("/") ? "/" : ""
    for component in path.split(separator: "/") {
        prefix += component
        if mkdir(prefix, 0o755) < 0 && errno != EEXIST {
            throw .system(.host, "creating \(prefix)", errno: errno)
        }
        prefix += "/"
    }
}

/// The directory part of `path` ("" for a bare name).
public func parentDirectory(of path: String) -> String {
    guard let slash = path.lastIndex(of: "/") else { return "" }
    return slash == path.startIndex ? "/" : String(path[..<slash])
}

/// Makes the directory a file at `path` goes into, when it is missing.
public func makeParentDirectory(of path: String) throws(SandboxError) {
    let directory = parentDirectory(of: path)
    if !directory.isEmpty { try makeDirectories(directory) }
}
