// CShims: the small C layer under HangarSandbox. Mechanism only: every decision
// (what to mount, which syscalls to allow, which ids to map) is made in Swift and
// handed over in the structs below. Functions return 0 or a negative errno; they
// never log.
#ifndef HANGAR_SHIMS_H
#define HANGAR_SHIMS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

// ---- spawn (spawn.c) -------------------------------------------------------

/// Steps of the child's setup; a failure is reported as {step, errno, detail}.
enum hg_step {
    HG_STEP_NONE = 0,
    HG_STEP_CLONE = 1,
    HG_STEP_SIGNALS = 2,
    HG_STEP_ID_MAP = 3,       // parent side: setgroups, uid_map, gid_map
    HG_STEP_IMAGE = 4,        // parent side: idmapped clone of the image
    HG_STEP_HANDSHAKE = 5,
    HG_STEP_CGROUP = 6,       // detail: index of the cgroup.procs fd
    HG_STEP_CGROUP_NS = 7,
    HG_STEP_IDENTITY = 8,     // setresgid/setresuid to root inside
    HG_STEP_PRIVATE = 9,      // make / recursively private
    HG_STEP_STAGING = 10,     // tmpfs for upper/work on the staging dir
    HG_STEP_LOWER = 11,       // attach the idmapped image below the overlay
    HG_STEP_OVERLAY = 12,
    HG_STEP_MOUNT = 13,       // detail: index into hg_spawn_args.mounts
    HG_STEP_READONLY_ROOT = 14,
    HG_STEP_PIVOT = 15,
    HG_STEP_HOSTNAME = 16,
    HG_STEP_LOOPBACK = 17,    // unused: prepared network namespaces come with lo up
    HG_STEP_SETSID = 18,
    HG_STEP_FDS = 19,
    HG_STEP_USER = 20,        // the final uid/gid inside
    HG_STEP_WORKDIR = 21,
    HG_STEP_PDEATHSIG = 22,
    HG_STEP_CAPS = 23,
    HG_STEP_NO_NEW_PRIVS = 24,
    HG_STEP_SECCOMP = 25,
    HG_STEP_EXEC_INIT = 26,
    HG_STEP_EXEC = 27,        // reported by hangar-init: the command's execve
    HG_STEP_INIT = 28,        // reported by hangar-init: its own setup (fork, ...)
    HG_STEP_SPAWN_ROOT = 29,  // the spawning thread's own minimal mount namespace
    HG_STEP_RLIMIT = 30,      // prlimit; detail: index into hg_spawn_args.rlimits
    HG_STEP_HOST_BIND = 31,   // parent side: idmapped clone of a host path; detail: index
    HG_STEP_LANDLOCK = 32,    // detail: index of the writable path, or -1
};

/// One failure record, written to the report pipe. Mirrored by hangar-init.
struct hg_report {
    int32_t step;
    int32_t error;   // errno
    int32_t detail;  // index of the mount or fd concerned, or -1
};
_Static_assert(sizeof(struct hg_report) == 12, "hg_report is mirrored in Swift and hangar-init");

/// The hand-off to a prepared sandbox (`hangar-init standby`): one SOCK_SEQPACKET message
/// on its control socket. This header, then `length` bytes of NUL-terminated strings: the
/// working directory, `argc` arguments and `envc` environment entries; as SCM_RIGHTS,
/// `fd_count` fds: the command's 0, 1, 2, 3, ... and, last, the report pipe's write end.
/// On that pipe init first writes one hg_report with step HG_STEP_NONE (accepted), then,
/// as in a fresh spawn, a failure record or nothing (EOF: the command was executed).
/// EOF before the acceptance means the prepared sandbox had ended.
struct hg_handoff {
    uint32_t magic;             // HG_HANDOFF_MAGIC
    uint32_t argc;
    uint32_t envc;
    uint32_t fd_count;
    uint32_t length;
};
#define HG_HANDOFF_MAGIC 0x48474831u      // "HGH1"
enum hg_handoff_limits {
    HG_HANDOFF_MAX_BYTES = 96 * 1024,  // fits a unix socket's default send buffer
    HG_HANDOFF_MAX_STRINGS = 8192,
    HG_HANDOFF_MAX_FDS = 3 + 64 + 1,   // stdio, the declared fds, the report pipe
};

enum hg_mount_kind {
    /// A new filesystem: fsopen(source) + fsconfig(options) + fsmount(attrs), moved onto target.
    HG_MOUNT_FS = 1,
    /// A bind of a host path (resolved before pivot_root) onto target, with attrs.
    HG_MOUNT_BIND = 2,
    /// Re-mount target (already inside the new root) onto itself with attrs, e.g. read-only.
    HG_MOUNT_REBIND = 3,
    /// A symlink at target pointing to source.
    HG_MOUNT_SYMLINK = 4,
    /// hg_spawn_args.host_binds[tree] (cloned and idmapped by the parent, which sees the
    /// host's paths) attached at target.
    HG_MOUNT_HOST = 5,
};

enum hg_mount_flags {
    /// A missing target (or, for REBIND, a missing source) is skipped, not an error.
    HG_MOUNT_OPTIONAL = 1u << 0,
    /// Create a missing target as a directory.
    HG_MOUNT_MKDIR = 1u << 1,
    /// Create a missing target as an empty file.
    HG_MOUNT_MKFILE = 1u << 2,
};

/// One step of building the sandbox's file tree. Targets are relative to the new root
/// and are resolved with openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS): a symlink in
/// the image at a mount point makes the spawn fail instead of mounting elsewhere.
struct hg_mount {
    int32_t kind;              // enum hg_mount_kind
    uint32_t flags;            // enum hg_mount_flags
    uint64_t attrs;            // MOUNT_ATTR_* for the new or re-bound mount
    const char *source;        // fs type (FS), host path (BIND), link text (SYMLINK)
    const char *target;        // relative path, no leading '/', at most PATH_MAX
    const char *const *options;// FS: key, value pairs (value NULL = flag); NULL-terminated
    int32_t tree;              // HOST: index into hg_spawn_args.host_binds
};

/// A host path bound into the sandbox (policy mounts, per-key data directories). The
/// parent clones it (not recursively) and idmaps it to the sandbox's user namespace, so
/// that host root's files belong to the sandbox's root.
struct hg_host_bind {
    int source_fd;             // O_PATH fd of the host path, opened without following symlinks
    uint64_t attrs;            // MOUNT_ATTR_* besides IDMAP (RDONLY, NOSUID, NODEV, ...)
    int owned;                 // 1: idmapped with hg_spawn_args.bind_owner_map (read-write
                               // binds: what the sandbox writes is owned on disk by an
                               // unprivileged uid, never host root); 0: with the sandbox's own
                               // user namespace (host root's files are the sandbox root's)
};
#define HG_MAX_HOST_BINDS 16

/// One resource limit (RLIMIT_*), soft and hard, set by the child before exec.
struct hg_rlimit {
    int32_t resource;
    uint64_t value;
};

/// Namespace flags for hg_spawn_args.clone_flags (the CLONE_NEW* values).
enum hg_namespace {
    HG_NS_MOUNT = 0x00020000,
    HG_NS_CGROUP = 0x02000000,
    HG_NS_UTS = 0x04000000,
    HG_NS_IPC = 0x08000000,
    HG_NS_USER = 0x10000000,
    HG_NS_PID = 0x20000000,
    HG_NS_NET = 0x40000000,
};

/// Everything the child needs, prepared by the parent while it may still allocate.
struct hg_spawn_args {
    // Root filesystem
    const char *spawn_root;     // empty host directory: the spawning thread mounts its own
                                // minimal root there once (see enter_spawn_root in spawn.c)
    const char *image;          // host path of the image (lower layer), opened by the parent
    const char *staging;        // in the spawning thread's root ("/staging"); the child
                                // mounts its upper tmpfs over it
    const char *staging_options;// tmpfs options for the staging mount: "size=...,nr_inodes=...,mode=0755"
    const char *staging_device; // instead of the tmpfs: an ext4 block device (a loop device over
                                // a sparse file) that the parent mounts, idmapped, for the upper
    const char *overlay_options;// "lowerdir=...,upperdir=...,workdir=..." under staging
    const char *lower_dir;      // absolute paths under staging
    const char *upper_dir;
    const char *work_dir;
    const char *root_dir;
    int readonly_root;          // 1: the overlay root is re-mounted read-only after the mounts
    const struct hg_mount *mounts;
    size_t mount_count;

    // Identity
    const char *uid_map;        // "0 HOSTBASE COUNT\n"
    const char *gid_map;
    uint32_t uid;               // final uid/gid inside
    uint32_t gid;
    const char *hostname;

    // Files and processes
    int stdio[3];               // fds that become 0, 1, 2
    const int *keep_fds;        // more fds for the command, in order from 3 (at most 64)
    size_t keep_fd_count;       // the report fd becomes 3 + keep_fd_count in init
    const int *cgroup_fds;      // open cgroup.procs files to join (write "0"; cgroup v1)
    size_t cgroup_fd_count;
    int cgroup_dirfd;           // cgroup v2: the child is created in it (CLONE_INTO_CGROUP); -1: none
    const char *workdir;        // inside the sandbox, absolute
    int init_fd;                // executable fd (memfd) of hangar-init
    char *const *argv;          // init's argv: the command comes after init's own arguments
    char *const *envp;

    // Confinement
    const void *seccomp_filters;// concatenated struct sock_filter programs
    const uint16_t *seccomp_lengths; // instructions per program
    size_t seccomp_count;
    int cap_last;               // highest capability number the kernel knows
    int clone_flags;            // namespace flags (CLONE_NEW*; the cgroup namespace is unshared
                                // after joining the cgroups, the network namespace is netns_fd)
    int netns_fd;               // the sandbox's network namespace, from hg_netns_create; -1:
                                // the spawning thread makes one (returned in the result)
    const struct hg_host_bind *host_binds;  // at most HG_MAX_HOST_BINDS
    size_t host_bind_count;
    const char *bind_owner_map; // "OWNER HOSTBASE COUNT\n": on-disk OWNER+k is sandbox uid k in
                                // owned binds (uids and gids alike)
    const struct hg_rlimit *rlimits;
    size_t rlimit_count;
    uint32_t umask;
    uint64_t keep_caps;         // capabilities (bit n = capability n) the command keeps, in the
                                // bounding, permitted, effective, inheritable and ambient sets
    int seccomp_log;            // 1: SECCOMP_FILTER_FLAG_LOG (refused calls are audited)
    const char *const *writable_paths; // Landlock: writes only beneath these (inside the new
    size_t writable_path_count;        // root); NULL: no Landlock domain. Skipped where the
                                       // kernel has no Landlock.
    int background;             // 1: created ahead (a prepared sandbox). The clone and the
                                // child's setup run at nice 19, so that they yield to running
                                // sandboxes; the supervisor lifts it at the hand-off.
};

struct hg_spawn_result {
    pid_t pid;                  // host pid of the sandbox's init
    int pidfd;                  // pidfd of init (close-on-exec)
    int report_fd;              // read end: EOF once the command exec'd, or an hg_report
    int netns_fd;               // the network namespace made for it when args->netns_fd was -1
    struct hg_report failure;   // step != 0 when the spawn failed in setup
};

/// Create a sandboxed child and exec hangar-init in it. Returns 0 when init runs (the
/// caller then reads report_fd), or a negative errno with result->failure filled in.
/// Each spawn runs on one of a pool of long-lived spawning threads (the thread is the
/// child's parent for PR_SET_PDEATHSIG, so none ever exits), up to hg_spawners_max() at
/// once; safe to call from any thread. It blocks until the child has executed init.
int hg_spawn(const struct hg_spawn_args *args, struct hg_spawn_result *result);
/// The size of the pool of spawning threads.
int hg_spawners_max(void);
/// The most spawns that were in progress at once (since the last reset); `reset` starts
/// counting anew from now.
int hg_spawners_peak(int reset);
/// Let spawns use only the first `count` spawning threads (1 ... hg_spawners_max()); for
/// benchmarks.
void hg_spawners_limit(int count);

// ---- network namespaces (netns.c) ---------------------------------------------

/// A new network namespace with only loopback, up, owned by the host's user namespace.
/// Returns its fd (close-on-exec) or a negative errno. Made on a thread of its own.
int hg_netns_create(void);

/// A socket (close-on-exec) created in the network namespace `netns_fd` by the calling
/// thread, which enters it and returns to its own at once. Connections made with it stay
/// there: this is how a drone reaches 127.0.0.1:PORT inside a sandbox, with no host port.
/// Returns the fd or a negative errno.
int hg_socket_in_netns(int netns_fd, int domain, int type, int protocol);

/// Moves the calling thread into a new network namespace, configured as hg_netns_create's,
/// and returns an fd of it or a negative errno. The thread stays there (even on failure,
/// once unshare has succeeded): the caller goes back with setns.
int hg_netns_unshare_here(void);

/// Moves bytes from `from` to `to` (blocking fds) with splice(2) through a 1 MiB pipe until
/// EOF or an error, storing CLOCK_MONOTONIC nanoseconds in *last_activity after each
/// transfer; then shuts `to` down for writing and sets *done (shared by the two
/// directions: once one has finished, the other gives up after 60 silent seconds). A
/// reset of one side is passed on as a reset of the other when the caller closes it
/// (SO_LINGER 0). Blocks: run one per direction, each on its own thread. Returns the
/// bytes moved.
long hg_splice_one_way(int from, int to, volatile int64_t *last_activity, volatile int *done);

/// accept4(listener, SOCK_CLOEXEC): the fd, or a negative errno.
int hg_accept_cloexec(int listener);

// MARK: the proxy's pump (pump.c): non-blocking sockets, epoll, splice

/// One epoll event, unpacked (struct epoll_event is packed on x86-64).
struct hg_event {
    uint64_t data;
    uint32_t events;
    uint32_t unused;
};

extern const uint32_t hg_epoll_in, hg_epoll_out, hg_epoll_rdhup, hg_epoll_et, hg_epoll_exclusive;

int hg_epoll_create(void);
int hg_epoll_add(int epoll, int fd, uint32_t events, uint64_t data);
int hg_epoll_remove(int epoll, int fd);
/// epoll_wait into `events` (at most 256): how many, or a negative errno.
int hg_epoll_wait(int epoll, struct hg_event *events, int max, int timeout_ms);
/// A non-blocking, close-on-exec pipe of about `size` bytes: its capacity, or a negative errno.
int hg_pipe_open(int fds[2], int size);
/// An IPv4 listener (SO_REUSEADDR, close-on-exec; non-blocking if asked); the port it got in
/// *bound. The fd, or a negative errno (-EINVAL: not an IPv4 address).
int hg_listen_tcp4(const char *address, uint16_t port, int backlog, int nonblocking, uint16_t *bound);
/// accept4, non-blocking and close-on-exec, TCP_NODELAY; the peer's address as text in `peer`.
int hg_accept_nonblocking(int listener, char *peer, size_t peer_size);
/// A connection to an IPv4 address (close-on-exec, TCP_NODELAY). Non-blocking: the fd, its
/// connection maybe still in progress; blocking: connected. Or a negative errno.
int hg_connect_tcp4(const char *address, uint16_t port, int nonblocking);
/// recv(MSG_PEEK|MSG_DONTWAIT), recv(MSG_DONTWAIT), send(MSG_DONTWAIT|MSG_NOSIGNAL): bytes, 0 at
/// EOF (not for send), or a negative errno (-EAGAIN: would block).
long hg_peek(int fd, uint8_t *buffer, size_t size);
long hg_receive(int fd, uint8_t *buffer, size_t size);
long hg_send(int fd, const uint8_t *buffer, size_t size);
int hg_shutdown_write(int fd);
/// The calling thread's id (for its CPU time in /proc/self/task).
int hg_thread_id(void);
/// TCP keepalive: probes after `idle_seconds` of silence, every `interval_seconds`, `count` times.
int hg_keepalive(int fd, int idle_seconds, int interval_seconds, int count);
/// Closes with SO_LINGER 0: the peer sees a reset, not an orderly end.
int hg_close_reset(int fd);

/// Bytes on their way from one socket to another through a pipe.
struct hg_flow {
    int32_t from, to;
    int32_t pipe_read, pipe_write;
    int64_t buffered;   // in the pipe now
    int64_t remaining;  // still to read from `from`; -1: until EOF
    int64_t moved;      // written to `to` so far
};

enum hg_flow_state {
    HG_FLOW_DONE = 0,   // `remaining` reached 0 and the pipe is empty
    HG_FLOW_READ = 1,   // `from` has nothing now: wait until readable
    HG_FLOW_WRITE = 2,  // `to` is full: wait until writable
    HG_FLOW_EOF = 3,    // `from` ended (the pipe is empty)
    HG_FLOW_MORE = 4,   // moved its share for this turn: call again soon
};

/// Moves what it can with splice (non-blocking) through a pipe of `capacity` bytes: first
/// what is in the pipe, then from `from`, never past `remaining`. An enum hg_flow_state,
/// or a negative errno.
int hg_flow_run(struct hg_flow *flow, int32_t capacity);

/// Relaxed atomic access to a value the pump writes.
static inline int64_t hg_atomic_load_i64(int64_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
static inline void hg_atomic_store_i64(int64_t *p, int64_t v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }
static inline void hg_atomic_add_i64(int64_t *p, int64_t v) { __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }

// ---- seccomp (seccomp.c) ---------------------------------------------------

/// A compiled seccomp program (raw BPF).
struct hg_bpf {
    void *instructions;         // struct sock_filter[count], malloc'd
    uint16_t count;
};

/// (args[arg] & mask) == value
struct hg_seccomp_match {
    uint32_t arg;               // 0..5
    uint64_t mask;
    uint64_t value;
};

/// One syscall rule: the action applies when every match holds (none: always). A
/// syscall name unknown to this architecture is skipped.
struct hg_seccomp_rule {
    const char *name;
    uint32_t action;            // SCMP_ACT_* value (allow, errno(n), kill)
    uint32_t match_count;       // 0..2
    struct hg_seccomp_match matches[2];
};

/// Compile rules into BPF for the native architecture. Other architectures (x32,
/// the i386 entry on x86_64) hit bad_arch_action. Returns 0 or a negative errno;
/// on -EINVAL *bad_rule names the rule that libseccomp refused.
int hg_seccomp_compile(uint32_t default_action, uint32_t bad_arch_action,
                       const struct hg_seccomp_rule *rules, size_t count,
                       struct hg_bpf *out, size_t *bad_rule);
void hg_bpf_free(struct hg_bpf *bpf);

/// The syscall number of name on the native architecture, or a negative value.
int hg_seccomp_resolve(const char *name);
/// The name of syscall number nr on the native architecture, or NULL (caller frees).
char *hg_seccomp_name(int nr);

/// SCMP_ACT_* encodings, for Swift.
uint32_t hg_seccomp_act_allow(void);
uint32_t hg_seccomp_act_errno(uint16_t err);
uint32_t hg_seccomp_act_kill_process(void);

// ---- processes (process.c) -------------------------------------------------

int hg_pidfd_send_signal(int pidfd, int sig);
/// waitid(P_PIDFD) without blocking. Returns 1 and the status when the process ended,
/// 0 while it runs, or a negative errno.
int hg_pidfd_reap(int pidfd, int *code, int *by_signal);
/// Copy the file at path into a sealed memfd that can be executed with execveat.
int hg_sealed_exec_copy(const char *path, const char *name);
/// Attaches the file `file_fd` to a free loop device with LO_FLAGS_AUTOCLEAR (it detaches
/// once its last opener and mount are gone). Returns an open fd of the device (close-on-
/// exec) and writes "/dev/loopN" into path, or a negative errno.
int hg_loop_attach(int file_fd, char *path, size_t path_size);
/// Host probes for `hangar doctor`: the Landlock ABI version (or a negative errno), and 0
/// when clone3 and pidfd_open exist (or a negative errno).
int hg_probe_landlock(void);
int hg_probe_clone3(void);
int hg_probe_pidfd(void);
/// HMAC-SHA256 of data under key (libcrypto). 0 or a negative errno.
int hg_hmac_sha256(const void *key, size_t key_length, const void *data, size_t length, uint8_t out[32]);
/// 1 when the two buffers are equal, compared in constant time.
int hg_equal_constant_time(const void *a, const void *b, size_t length);
/// setxattr(path, name, value, size, 0). 0 or a negative errno.
int hg_setxattr(const char *path, const char *name, const void *value, size_t size);
/// setpriority(PRIO_PROCESS, pid, nice). 0 or a negative errno.
int hg_set_nice(pid_t pid, int nice);
/// pipe2(O_CLOEXEC). 0 or a negative errno.
int hg_pipe(int fds[2]);
/// A close-on-exec eventfd (counter 0), non-blocking if asked, or a negative errno.
int hg_eventfd(int nonblocking);
/// An O_PATH fd of the absolute `path`, refusing symlinks anywhere on it (openat2
/// RESOLVE_NO_SYMLINKS), or a negative errno.
int hg_open_path_no_symlinks(const char *path);
/// sendmsg of data with fds attached (SCM_RIGHTS), MSG_NOSIGNAL. 0 or a negative errno.
int hg_send_with_fds(int socket, const void *data, size_t length, const int *fds, size_t fd_count);
/// The highest capability number of the running kernel.
int hg_cap_last(void);
/// The symbolic name of an errno value ("ENOENT"), or NULL.
const char *hg_errno_name(int err);

#ifdef __cplusplus
}
#endif
#endif
