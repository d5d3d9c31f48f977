import CShims
import Glibc

/// Why a sandbox could not be created or supervised.
public struct SandboxError: Error, CustomStringConvertible, Sendable {
    /// What kind of failure this is; stable, for programs.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        let name: String
        public var description: String { name }

        /// The spec was refused before anything was created.
        public static let invalidSpec = Code(name: "invalid-spec")
        /// The image does not exist or is not usable.
        public static let image = Code(name: "image")
        /// A setup step in the child (or for it, in the parent) failed.
        public static let setup = Code(name: "setup")
        /// The command could not be executed inside the sandbox.
        public static let exec = Code(name: "exec")
        /// The host is missing something the sandbox needs (a kernel feature, a file).
        public static let host = Code(name: "host")
    }

    /// The kind of failure.
    public var code: Code
    /// A human message naming what failed, where and why.
    public var message: String
    /// The setup step, for `.setup` and `.exec`.
    public var step: SetupStep?
    /// The errno, when a system call failed.
    public var errno: Int32?

    init(_ code: Code, _ message: String, step: SetupStep? = nil, errno: Int32? = nil) {
        self.code = code
        self.message = message
        self.step = step
        self.errno = errno
    }

    public var description: String { message }

    static func invalid(_ field: String, _ reason: String) -> SandboxError {
        SandboxError(.invalidSpec, "invalid sandbox spec: \(field): \(reason)")
    }

    static func system(_ code: Code, _ what: String, errno err: Int32) -> SandboxError {
        SandboxError(code, "\(what): \(errnoName(err))", errno: err)
    }
}

/// "ENOENT (No such file or directory)".
func errnoName(_ err: Int32) -> String {
    let name = hg_errno_name(err).map { String(cString: $0) } ?? "errno \(err)"
    return "\(name) (\(String(cString: strerror(err))))"
}

/// The steps of a sandbox's setup, as the C shim reports them.
public enum SetupStep: Int32, Sendable, CustomStringConvertible {
    case clone = 1, signals, idMap, image, handshake, cgroup, cgroupNamespace, identity, privateRoot, staging
    case lower, overlay, mount, readOnlyRoot, pivot, hostname, loopback, setsid, fds, user, workdir
    case parentDeathSignal, capabilities, noNewPrivs, seccomp, execInit, exec, initSetup, spawnRoot
    case rlimit, hostBind, landlock

    public var description: String {
        switch self {
        case .clone: "clone"
        case .signals: "signal reset"
        case .idMap: "uid/gid map"
        case .image: "idmapped image mount"
        case .handshake: "handshake with the child"
        case .cgroup: "joining the cgroup"
        case .cgroupNamespace: "cgroup namespace"
        case .identity: "becoming root in the user namespace"
        case .privateRoot: "making / private"
        case .staging: "upper tmpfs"
        case .lower: "attaching the image"
        case .overlay: "overlay mount"
        case .mount: "mount"
        case .readOnlyRoot: "read-only root"
        case .pivot: "pivot_root"
        case .hostname: "sethostname"
        case .loopback: "bringing up lo"
        case .setsid: "setsid"
        case .fds: "arranging file descriptors"
        case .user: "switching to the sandbox user"
        case .workdir: "changing to the working directory"
        case .parentDeathSignal: "parent death signal"
        case .capabilities: "dropping capabilities"
        case .noNewPrivs: "no_new_privs"
        case .seccomp: "seccomp filter"
        case .execInit: "executing hangar-init"
        case .exec: "executing the command"
        case .initSetup: "hangar-init setup"
        case .spawnRoot: "the spawning thread's mount namespace"
        case .rlimit: "setting a resource limit"
        case .hostBind: "binding a host path"
        case .landlock: "the Landlock domain"
        }
    }
}

/// The value of an errno name ("EPERM" → 1), or nil.
public func errnoValue(named name: String) -> Int32? {
    for value in Int32(1)..<Int32(256) {
        if let cName = hg_errno_name(value), String(cString: cName) == name { return value }
    }
    return nil
}

/// The name of an errno value ("EPERM"), or its number as text.
public func errnoSymbol(_ value: Int32) -> String {
    hg_errno_name(value).map { String(cString: $0) } ?? "\(value)"
}
