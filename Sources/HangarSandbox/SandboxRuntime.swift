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
    /// Network namespaces kept ready for spawns; 0 makes each one during its spawn.
    public var networkNamespacePool: Int = 4

    /// The defaults above.
    public init() {}
}

/// Creates sandboxes. One per process: it holds hangar-init (as a sealed memfd, so a
/// sandbox can never write to the binary on the host), the compiled seccomp programs,
/// the pidfd reaper, and the cgroup hierarchy.
public final class SandboxRuntime: Sendable {
    let configuration: SandboxRuntimeConfiguration
    let logger: Logger
    let initFD: Int32
    let reaper: Reaper
    let capLast: Int32
    let cgroups: CgroupV1Hierarchy?
    let networkNamespaces: NetworkNamespacePool
    let idRanges: IDRangePool
    private let mountPlans = Mutex<[UInt64: CMountPlan]>([:])
    private let programs = Mutex<[SeccompProfile: [[UInt8]]]>([:])

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
            if mkdir(directory, 0o755) < 0 && errno != EEXIST {
                throw .system(.host, "creating \(directory)", errno: errno)
            }
        }
        let initPath = configuration.initPath ?? Self.defaultInitPath()
        let fd = hg_sealed_exec_copy(initPath, "hangar-init")
        guard fd >= 0 else {
            throw .system(.host, "loading hangar-init from \(initPath) (set HANGAR_INIT)", errno: -fd)
        }
        self.initFD = fd
        self.reaper = try Reaper()
        self.capLast = hg_cap_last()
        self.cgroups = CgroupV1Hierarchy.discover(parentName: configuration.cgroupParent)
        self.networkNamespaces = NetworkNamespacePool(size: configuration.networkNamespacePool)
        self.idRanges = IDRangePool(lockDirectory: configuration.stateDirectory + "/ids")
    }

    deinit { close(initFD) }

    static func defaultInitPath() -> String {
        if let path = getenv("HANGAR_INIT") { return String(cString: path) }
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX))
        let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        guard n > 0 else { return "hangar-init" }
        let exe = String(decoding: buffer.prefix(n).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        // Next to the executable: SwiftPM builds both (and the test runner) into one directory.
        let directory = exe.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/")
        return directory + "/hangar-init"
    }

    /// The BPF programs of `profile`, compiled on first use.
    func programs(for profile: SeccompProfile) throws(SandboxError) -> [[UInt8]] {
        if let cached = programs.withLock({ $0[profile] }) { return cached }
        let compiled = try profile.compile()
        programs.withLock { $0[profile] = compiled }
        return compiled
    }

    /// The mount plan for this /dev/shm size, laid out in C memory once.
    private func mountPlan(shmSize: UInt64) -> CMountPlan {
        mountPlans.withLock { plans in
            if let plan = plans[shmSize] { return plan }
            let plan = CMountPlan(MountPlan.steps(shmSize: shmSize))
            plans[shmSize] = plan
            return plan
        }
    }

    /// Creates a sandbox and starts `spec.command` in it. Returns once the command has
    /// been executed; a failure of any setup step (or of the exec) throws, leaving
    /// nothing behind.
    public func spawn(_ spec: SandboxSpec) async throws(SandboxError) -> Sandbox {
        try spec.validate()
        let programs = try programs(for: spec.seccomp)
        let id = SandboxID.random()
        let ids = try idRanges.acquire()
        var group: CgroupV1Group?
        if !spec.limits.isEmpty {
            guard let cgroups else {
                throw SandboxError(.host, "resource limits need cgroups, and no cgroup v1 controller is mounted")
            }
            group = try cgroups.create(name: id.rawValue, limits: spec.limits)
        }
        let netns: Int32
        do {
            netns = try networkNamespaces.take()
        } catch {
            group?.destroy()
            throw error
        }
        let resources = SandboxResources(ids: ids, pool: idRanges, cgroup: group, networkNamespace: netns)
        var result = hg_spawn_result()
        let plan = mountPlan(shmSize: spec.shmSize.bytes)
        let mounts = plan.steps
        let status = withSpawnArguments(
            spec: spec, mounts: plan, programs: programs, ids: ids, cgroup: group, netns: netns
        ) {
            hg_spawn($0, &result)
        }
        if status != 0 {
            resources.release()
            throw describeFailure(result.failure, spec: spec, mounts: mounts)
        }
        let sandbox = Sandbox.supervise(
            id: id, pid: result.pid, pidfd: result.pidfd, reaper: reaper, resources: resources)
        if let failure = Self.awaitExec(reportFD: result.report_fd) {
            sandbox.kill()
            _ = await sandbox.wait()
            throw describeFailure(failure, spec: spec, mounts: mounts)
        }
        logger.debug(
            "sandbox started",
            metadata: ["sandbox.id": "\(id)", "sandbox.pid": "\(result.pid)", "image": "\(spec.image.root)"])
        return sandbox
    }

    /// Reads the report pipe until hangar-init has executed the command (EOF) or says why not.
    private static func awaitExec(reportFD: Int32) -> hg_report? {
        defer { close(reportFD) }
        var report = hg_report()
        var pending = pollfd(fd: reportFD, events: Int16(POLLIN), revents: 0)
        // hangar-init forks and executes at once; ten seconds is a wedged machine.
        guard poll(&pending, 1, 10_000) == 1 else {
            return hg_report(step: SetupStep.initSetup.rawValue, error: ETIMEDOUT, detail: -1)
        }
        let n = withUnsafeMutableBytes(of: &report) { read(reportFD, $0.baseAddress, $0.count) }
        return n == MemoryLayout<hg_report>.size && report.step != 0 ? report : nil
    }

    private func describeFailure(_ failure: hg_report, spec: SandboxSpec, mounts: [MountStep]) -> SandboxError {
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
        case .image:
            message = "idmapped mount of the image failed: \(errnoName(err)) (\(spec.image.root))"
        case .workdir:
            message = "working directory \(spec.workingDirectory) failed: \(errnoName(err))"
        case .hostname:
            message = "sethostname \(spec.hostname) failed: \(errnoName(err))"
        default:
            message = "sandbox setup failed at \(step): \(errnoName(err))"
        }
        return SandboxError(.setup, message, step: step, errno: err)
    }

    /// Lays the spawn arguments out in C memory that lives until `body` returns.
    private func withSpawnArguments(
        spec: SandboxSpec, mounts: CMountPlan, programs: [[UInt8]], ids: IDRange, cgroup: CgroupV1Group?,
        netns: Int32, _ body: (UnsafePointer<hg_spawn_args>) -> Int32
    ) -> Int32 {
        let arena = CArena()
        defer { arena.release() }
        let staging = "/staging"
        var initArguments = ["hangar-init", "\(3 + spec.extraFDs.count)"]
        initArguments += spec.command
        let environment = spec.environment.map { "\($0.name)=\($0.value)" }
        let filters = programs.flatMap { $0 }
        let lengths = programs.map { UInt16($0.count / 8) }
        var args = hg_spawn_args()
        args.image = arena.string(spec.image.root)
        args.spawn_root = arena.string(spawnRoot)
        args.staging = arena.string(staging)
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
        let cgroupFDs = cgroup?.procsFDs ?? []
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
        // The network namespace is the prepared one in netns_fd.
        let namespaces: [hg_namespace] = [HG_NS_PID, HG_NS_MOUNT, HG_NS_IPC, HG_NS_UTS, HG_NS_CGROUP]
        args.clone_flags = Int32(namespaces.reduce(0) { $0 | $1.rawValue })
        args.netns_fd = netns
        return withUnsafePointer(to: &args) { body($0) }
    }
}

/// What a sandbox holds on the host until it is reaped.
final class SandboxResources: Sendable {
    private let state: Mutex<(ids: IDRange?, cgroup: CgroupV1Group?, networkNamespace: Int32)>
    private let pool: IDRangePool

    init(ids: IDRange, pool: IDRangePool, cgroup: CgroupV1Group?, networkNamespace: Int32) {
        state = Mutex((ids, cgroup, networkNamespace))
        self.pool = pool
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
                            .assumingMemoryBound(to: UnsafePointer<CChar>?.self))
            })
    }

    deinit { arena.release() }
}
