import CShims
import Glibc

/// A seccomp profile: an allow-list of system calls by name, a default errno for the
/// calls it knows but does not allow, ENOSYS for the calls it does not know (so newer
/// libc falls back), argument rules, and a must-block set that no profile can allow.
///
/// It compiles to two BPF programs that the kernel runs one after the other, taking
/// the stricter answer: the allow-list, and a guard that refuses dangerous argument
/// values (namespace flags to clone, raw and packet sockets, TIOCSTI) of calls the
/// allow-list lets through. libseccomp cannot express "allow unless the low 32 bits
/// equal X" in one program, and the kernel truncates those arguments to 32 bits.
public struct SeccompProfile: Sendable, Hashable {
    /// A name for messages.
    public var name: String
    /// System calls allowed without conditions.
    public var allowed: Set<String>
    /// System calls that fail with a specific errno (e.g. clone3 with ENOSYS).
    public var errnos: [String: Int32]
    /// System calls allowed only when an argument matches.
    public var conditionalAllows: [ArgumentMatch]
    /// Argument values refused with `defaultErrno` even when the call is allowed.
    public var argumentDenials: [ArgumentMatch]
    /// The errno of a known system call that is not allowed.
    public var defaultErrno: Int32 = EPERM
    /// The errno of a system call number this profile does not know.
    public var unknownErrno: Int32 = ENOSYS
    /// Refused calls are logged by the kernel (SECCOMP_FILTER_FLAG_LOG, the audit log).
    public var logDenied = false

    /// `(argument & mask) == value` for every condition (at most two), on one system call.
    public struct ArgumentMatch: Sendable, Hashable {
        /// One condition on one argument.
        public struct Condition: Sendable, Hashable {
            public var argument: UInt32
            public var mask: UInt64
            public var value: UInt64

            public init(argument: UInt32, mask: UInt64, value: UInt64) {
                self.argument = argument
                self.mask = mask
                self.value = value
            }
        }

        public var syscall: String
        public var conditions: [Condition]
        /// For argument denials: the errno instead of the profile's default.
        public var errno: Int32?

        /// A match of one condition.
        public init(_ syscall: String, argument: UInt32, mask: UInt64, value: UInt64) {
            self.init(syscall, [Condition(argument: argument, mask: mask, value: value)])
        }

        /// A match of all `conditions` (at most two).
        public init(_ syscall: String, _ conditions: [Condition]) {
            self.syscall = syscall
            self.conditions = conditions
        }
    }

    /// Creates a profile; see the properties.
    public init(
        name: String, allowed: Set<String>, errnos: [String: Int32] = [:],
        conditionalAllows: [ArgumentMatch] = [], argumentDenials: [ArgumentMatch] = []
    ) {
        self.name = name
        self.allowed = allowed
        self.errnos = errnos
        self.conditionalAllows = conditionalAllows
        self.argumentDenials = argumentDenials
    }

    /// System calls that are always refused with `defaultErrno`, whatever a profile says:
    /// they reach kernel surface a sandbox never needs (namespaces, mounts, tracing, BPF,
    /// keyrings, io_uring, modules, clocks, raw I/O ports).
    public static let mustBlock: Set<String> = [
        // namespaces and mounts, old and new API
        "mount", "umount", "umount2", "fsopen", "fsconfig", "fsmount", "fspick", "move_mount", "open_tree",
        "open_tree_attr", "mount_setattr", "unshare", "setns", "pivot_root", "chroot",
        // other processes' memory and handles
        "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd", "process_madvise",
        // kernel programming and tracing
        "bpf", "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register",
        "fanotify_init", "lookup_dcookie", "quotactl", "quotactl_fd", "nfsservctl",
        // keyrings
        "keyctl", "add_key", "request_key",
        // kernel images and modules
        "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module", "create_module",
        // file handles bypass path checks
        "name_to_handle_at", "open_by_handle_at",
        // the machine
        "reboot", "swapon", "swapoff", "syslog", "acct", "vhangup", "iopl", "ioperm", "uselib", "ustat", "sysfs",
        "_sysctl", "modify_ldt",
        // clocks
        "settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "stime",
    ]

    /// Namespace flags refused in clone(2) flags (CLONE_NEWTIME shares its bit with the
    /// exit signal there and is only reachable through clone3 and unshare, both refused).
    static let cloneNamespaceFlags: [UInt64] = [
        0x0002_0000,  // CLONE_NEWNS
        0x0200_0000,  // CLONE_NEWCGROUP
        0x0400_0000,  // CLONE_NEWUTS
        0x0800_0000,  // CLONE_NEWIPC
        0x1000_0000,  // CLONE_NEWUSER
        0x2000_0000,  // CLONE_NEWPID
        0x4000_0000,  // CLONE_NEWNET
    ]

    /// Hangar's default profile: what ordinary programs (shells, interpreters, servers,
    /// compilers) use, written from the kernel's syscall tables.
    public static let `default`: SeccompProfile = {
        let low32: UInt64 = 0xffff_ffff
        var denials: [ArgumentMatch] = cloneNamespaceFlags.map {
            ArgumentMatch("clone", argument: 0, mask: $0, value: $0)
        }
        denials += [
            ArgumentMatch("socket", argument: 0, mask: low32, value: 17),  // AF_PACKET
            ArgumentMatch("socket", argument: 0, mask: low32, value: 38),  // AF_ALG
            ArgumentMatch("socket", argument: 0, mask: low32, value: 40),  // AF_VSOCK
            rawSocket(family: 2),  // AF_INET, SOCK_RAW
            rawSocket(family: 10),  // AF_INET6, SOCK_RAW
            // AF_INET with the obsolete SOCK_PACKET type, which the kernel turns into a
            // packet socket.
            ArgumentMatch("socket", [.init(argument: 0, mask: low32, value: 2), .init(argument: 1, mask: 0xf, value: 10)]),
            ArgumentMatch("socketpair", argument: 0, mask: low32, value: 38),
            ArgumentMatch("socketpair", argument: 0, mask: low32, value: 40),
            ArgumentMatch("ioctl", argument: 1, mask: low32, value: 0x5412),  // TIOCSTI
            ArgumentMatch("ioctl", argument: 1, mask: low32, value: 0x541C),  // TIOCLINUX
        ]
        return SeccompProfile(
            name: "default",
            allowed: defaultAllowed,
            errnos: ["clone3": ENOSYS],
            conditionalAllows: [
                ArgumentMatch("personality", argument: 0, mask: low32, value: 0),  // PER_LINUX
                ArgumentMatch("personality", argument: 0, mask: low32, value: 0x0002_0000),  // ADDR_NO_RANDOMIZE
                ArgumentMatch("personality", argument: 0, mask: low32, value: 0xffff_ffff),  // query
            ],
            argumentDenials: denials)
    }()

    /// socket(family, SOCK_RAW | flags, …); netlink's raw sockets stay allowed (they
    /// only see the sandbox's own network namespace).
    static func rawSocket(family: UInt64) -> ArgumentMatch {
        ArgumentMatch(
            "socket",
            [
                .init(argument: 0, mask: 0xffff_ffff, value: family),
                .init(argument: 1, mask: 0xf, value: 3),
            ])
    }

    static let defaultAllowed: Set<String> = [
        // files and directories
        "read", "write", "open", "openat", "openat2", "close", "close_range", "creat", "lseek", "_llseek",
        "pread64", "pwrite64", "readv", "writev", "preadv", "pwritev", "preadv2", "pwritev2", "stat", "fstat",
        "lstat", "newfstatat", "fstatat64", "statx", "statfs", "fstatfs", "access", "faccessat", "faccessat2",
        "getdents", "getdents64", "getcwd", "chdir", "fchdir", "rename", "renameat", "renameat2", "mkdir",
        "mkdirat", "rmdir", "link", "linkat", "unlink", "unlinkat", "symlink", "symlinkat", "readlink",
        "readlinkat", "chmod", "fchmod", "fchmodat", "fchmodat2", "chown", "fchown", "lchown", "fchownat", "umask",
        "truncate", "ftruncate", "fallocate", "fsync", "fdatasync", "sync", "syncfs", "sync_file_range",
        "flock", "fcntl", "dup", "dup2", "dup3", "pipe", "pipe2", "mknod", "mknodat", "utime", "utimes",
        "utimensat", "futimesat", "setxattr", "lsetxattr", "fsetxattr", "getxattr", "lgetxattr", "fgetxattr",
        "listxattr", "llistxattr", "flistxattr", "removexattr", "lremovexattr", "fremovexattr", "setxattrat",
        "getxattrat", "listxattrat", "removexattrat", "sendfile", "splice", "tee", "vmsplice", "copy_file_range",
        "readahead", "fadvise64", "ioctl", "inotify_init", "inotify_init1", "inotify_add_watch",
        "inotify_rm_watch", "memfd_create", "cachestat",
        // memory
        "brk", "mmap", "munmap", "mremap", "mprotect", "madvise", "msync", "mincore", "mlock", "mlock2", "munlock",
        "mlockall", "munlockall", "remap_file_pages", "pkey_mprotect", "pkey_alloc", "pkey_free", "membarrier",
        "get_mempolicy", "set_mempolicy", "mbind", "set_mempolicy_home_node", "mseal", "map_shadow_stack",
        // processes and threads
        "clone", "fork", "vfork", "execve", "execveat", "exit", "exit_group", "wait4", "waitid", "getpid",
        "getppid", "gettid", "getpgid", "setpgid", "getpgrp", "getsid", "setsid", "set_tid_address",
        "set_robust_list", "get_robust_list", "futex", "futex_waitv", "futex_wake", "futex_wait", "futex_requeue",
        "rseq", "arch_prctl", "set_thread_area", "get_thread_area", "prctl", "sched_yield", "sched_getaffinity",
        "sched_setaffinity", "sched_getparam", "sched_setparam", "sched_getscheduler", "sched_setscheduler",
        "sched_get_priority_max", "sched_get_priority_min", "sched_rr_get_interval", "sched_getattr",
        "sched_setattr", "getpriority", "setpriority", "ioprio_get", "ioprio_set", "getrlimit", "setrlimit",
        "prlimit64", "ugetrlimit", "getrusage", "times", "capget", "capset", "seccomp", "pidfd_open",
        "pidfd_send_signal", "landlock_create_ruleset", "landlock_add_rule", "landlock_restrict_self",
        "restart_syscall", "getcpu", "uname",
        // credentials (inside the user namespace, without capabilities)
        "getuid", "geteuid", "getgid", "getegid", "getresuid", "getresgid", "getgroups", "setuid", "setgid",
        "setreuid", "setregid", "setresuid", "setresgid", "setfsuid", "setfsgid", "setgroups",
        // signals
        "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "rt_sigpending", "rt_sigtimedwait", "rt_sigqueueinfo",
        "rt_tgsigqueueinfo", "rt_sigsuspend", "sigaltstack", "kill", "tkill", "tgkill", "pause", "signalfd",
        "signalfd4",
        // time
        "nanosleep", "clock_nanosleep", "clock_gettime", "clock_getres", "gettimeofday", "time", "alarm",
        "getitimer", "setitimer", "timer_create", "timer_settime", "timer_gettime", "timer_getoverrun",
        "timer_delete", "timerfd_create", "timerfd_settime", "timerfd_gettime",
        // waiting and events
        "select", "pselect6", "poll", "ppoll", "epoll_create", "epoll_create1", "epoll_ctl", "epoll_wait",
        "epoll_pwait", "epoll_pwait2", "eventfd", "eventfd2", "io_setup", "io_destroy", "io_submit", "io_cancel",
        "io_getevents", "io_pgetevents",
        // sockets (families and types are checked by the guard program)
        "socket", "socketpair", "bind", "listen", "accept", "accept4", "connect", "getsockname", "getpeername",
        "sendto", "recvfrom", "sendmsg", "recvmsg", "sendmmsg", "recvmmsg", "shutdown", "setsockopt", "getsockopt",
        // System V IPC and POSIX queues (in the sandbox's own IPC namespace)
        "shmget", "shmat", "shmdt", "shmctl", "semget", "semop", "semtimedop", "semctl", "msgget", "msgsnd",
        "msgrcv", "msgctl", "mq_open", "mq_unlink", "mq_timedsend", "mq_timedreceive", "mq_notify",
        "mq_getsetattr",
        // misc
        "getrandom", "sysinfo",
    ]

    /// Whether the native architecture has a system call of this name.
    public static func knows(_ name: String) -> Bool {
        hg_seccomp_resolve(name) >= 0
    }

    /// The BPF programs of this profile for the native architecture.
    func compile() throws(SandboxError) -> [[UInt8]] {
        var rules: [(String, UInt32, [ArgumentMatch.Condition])] = []
        let refuse = hg_seccomp_act_errno(UInt16(defaultErrno))
        let allow = hg_seccomp_act_allow()
        // Every system call the architecture knows gets an explicit answer, so that the
        // filter's default (unknownErrno) applies only to numbers newer than this table.
        var nr: Int32 = 0
        while nr < 1024 {
            defer { nr += 1 }
            guard let cName = hg_seccomp_name(nr) else { continue }
            let name = String(cString: cName)
            free(cName)
            if Self.mustBlock.contains(name) {
                rules.append((name, refuse, []))
            } else if name == "clone3" {
                // Its flags live in memory that seccomp cannot read, so the guard could not
                // refuse namespace flags: ENOSYS, whatever the profile says, and libc falls
                // back to clone(2), which the guard does check.
                rules.append((name, hg_seccomp_act_errno(UInt16(ENOSYS)), []))
            } else if let err = errnos[name] {
                rules.append((name, hg_seccomp_act_errno(UInt16(err)), []))
            } else if allowed.contains(name) {
                rules.append((name, allow, []))
            } else {
                let matches = conditionalAllows.filter { $0.syscall == name }
                rules += matches.isEmpty ? [(name, refuse, [])] : matches.map { (name, allow, $0.conditions) }
            }
        }
        let allowList = try Self.program(
            default: hg_seccomp_act_errno(UInt16(unknownErrno)), rules: rules, what: "allow-list")
        let guardRules = argumentDenials.map { ($0.syscall, $0.errno.map { hg_seccomp_act_errno(UInt16($0)) } ?? refuse, $0.conditions) }
        let argumentGuard = try Self.program(default: allow, rules: guardRules, what: "argument guard")
        return [allowList, argumentGuard]
    }

    private static func program(
        default action: UInt32, rules: [(String, UInt32, [ArgumentMatch.Condition])], what: String
    ) throws(SandboxError) -> [UInt8] {
        let names = rules.map { strdup($0.0)! }
        defer { names.forEach { free($0) } }
        var cRules = zip(names, rules).map { name, rule in
            let matches = rule.2.map { hg_seccomp_match(arg: $0.argument, mask: $0.mask, value: $0.value) }
            let none = hg_seccomp_match()
            return hg_seccomp_rule(
                name: name, action: rule.1, match_count: UInt32(matches.count),
                matches: (matches.first ?? none, matches.count > 1 ? matches[1] : none))
        }
        var bpf = hg_bpf()
        var bad = 0
        let err = hg_seccomp_compile(action, hg_seccomp_act_kill_process(), &cRules, cRules.count, &bpf, &bad)
        guard err == 0 else {
            let rule = err == -EINVAL && bad < rules.count ? " (rule for \(rules[bad].0))" : ""
            throw .system(.host, "compiling the seccomp \(what)\(rule)", errno: -err)
        }
        defer { hg_bpf_free(&bpf) }
        return [UInt8](UnsafeRawBufferPointer(start: bpf.instructions, count: Int(bpf.count) * 8))
    }
}
