// hangar-attack: hostile code for Hangar's isolation suite. Each attack tries one way
// out of (or through) a sandbox and prints one line: "CONTAINED: how it was stopped",
// "ESCAPED: what it got", or, for attacks whose containment only the supervisor can
// judge (a memory hog that is OOM-killed, a wall-clock overrun), "DONE: what it did".
//
// Usage: hangar-attack ATTACK [ARG...]      hangar-attack list
//
// It refuses to run unless it is already confined — no capabilities, no_new_privs, a
// seccomp filter — so that a mistake can never run it as root on a host: several attacks
// would damage one (a fork bomb, writes to /proc/sysrq-trigger, kill(-1)). Network probes
// target loopback only. Built static, so that it runs in an image of its own.
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_ether.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <time.h>
#include <unistd.h>

#include "../CShims/include/hg_swift_runtime_stubs.h"

static int contained(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int escaped(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int done(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#include <stdarg.h>
static int say(const char *word, int result, const char *fmt, va_list ap) {
    printf("%s: ", word);
    vprintf(fmt, ap);
    printf("\n");
    fflush(stdout);
    return result;
}
static int contained(const char *fmt, ...) { va_list ap; va_start(ap, fmt); int r = say("CONTAINED", 0, fmt, ap); va_end(ap); return r; }
static int escaped(const char *fmt, ...) { va_list ap; va_start(ap, fmt); int r = say("ESCAPED", 1, fmt, ap); va_end(ap); return r; }
static int done(const char *fmt, ...) { va_list ap; va_start(ap, fmt); int r = say("DONE", 0, fmt, ap); va_end(ap); return r; }

/// The value of a "Name:\tvalue" line of /proc/self/status, or "" .
static const char *status_field(const char *name) {
    static char value[128];
    value[0] = 0;
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return value;
    char line[256];
    size_t n = strlen(name);
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, name, n) == 0 && line[n] == ':') {
            char *v = line + n + 1;
            while (*v == ' ' || *v == '\t') v++;
            v[strcspn(v, "\n")] = 0;
            snprintf(value, sizeof value, "%s", v);
        }
    }
    fclose(f);
    return value;
}

/// Confined: no capability anywhere, no_new_privs, and a seccomp filter.
static int confined(char *why, size_t size) {
    const char *caps[] = {"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"};
    for (size_t i = 0; i < 5; i++) {
        const char *v = status_field(caps[i]);
        if (strspn(v, "0") != strlen(v) || v[0] == 0) {
            snprintf(why, size, "%s is %s", caps[i], v);
            return 0;
        }
    }
    // In a user namespace of its own: uid 0 here must not be the host's root (an empty
    // capability set alone does not stop root from signalling root's processes).
    FILE *map = fopen("/proc/self/uid_map", "r");
    unsigned long inside = 1, outside = 0, count = 0;
    if (!map || fscanf(map, "%lu %lu %lu", &inside, &outside, &count) != 3 || (inside == 0 && outside == 0)) {
        if (map) fclose(map);
        return snprintf(why, size, "not in a user namespace of its own (uid 0 is the host's)"), 0;
    }
    fclose(map);
    if (strcmp(status_field("NoNewPrivs"), "1") != 0) return snprintf(why, size, "no_new_privs is off"), 0;
    if (strcmp(status_field("Seccomp"), "2") != 0) return snprintf(why, size, "no seccomp filter"), 0;
    return 1;
}

// ---- helpers -------------------------------------------------------------------

/// Expect a system call to fail; CONTAINED with its errno, or ESCAPED.
static int expect_failure(const char *what, long result, int err) {
    if (result < 0) return contained("%s failed with %s", what, strerrorname_np(err) ? strerrorname_np(err) : "?");
    return escaped("%s succeeded (%ld)", what, result);
}

#define TRY(what, call) ({ errno = 0; long _r = (long)(call); expect_failure(what, _r, errno); })

/// Runs fn in a child and reports how the child ended (for attacks that kill their process).
static int in_child(int (*fn)(void), int *signal_out) {
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) _exit(fn());
    int status = 0;
    waitpid(pid, &status, 0);
    *signal_out = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// ---- resources -----------------------------------------------------------------

static int fork_bomb(void) {
    int count = 0, err = 0;
    for (; count < 100000; count++) {
        pid_t pid = fork();
        if (pid < 0) {
            err = errno;
            break;
        }
        if (pid == 0) {
            sleep(30);
            _exit(0);
        }
    }
    if (count < 100000) return contained("fork refused after %d children (%s)", count, strerrorname_np(err));
    return escaped("%d children", count);
}

static void *sleeper(void *unused) {
    (void)unused;
    sleep(30);
    return NULL;
}

static int thread_bomb(void) {
    int count = 0, err = 0;
    for (; count < 100000; count++) {
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setstacksize(&attr, 64 * 1024);
        err = pthread_create(&t, &attr, sleeper, NULL);
        pthread_attr_destroy(&attr);
        if (err != 0) break;
    }
    if (count < 100000) return contained("thread creation refused after %d threads (%s)", count, strerrorname_np(err));
    return escaped("%d threads", count);
}

static int memory_hog(void) {
    size_t total = 0;
    for (int i = 0; i < 4096; i++) {  // up to 64 GiB
        char *chunk = mmap(NULL, 16 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (chunk == MAP_FAILED) return contained("mmap refused after %zu MiB", total >> 20);
        memset(chunk, 1, 16 << 20);
        total += 16 << 20;
    }
    return escaped("touched %zu MiB", total >> 20);
}

/// Writes to path until the file system says no.
static int fill(const char *path, size_t limit_mib) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) return contained("cannot create %s (%s)", path, strerrorname_np(errno));
    static char block[1 << 20];
    memset(block, 'x', sizeof block);
    size_t written = 0;
    while (written < (limit_mib << 20)) {
        ssize_t n = write(fd, block, sizeof block);
        if (n < 0) {
            int err = errno;
            close(fd);
            unlink(path);
            return contained("%s: %s after %zu MiB", path, strerrorname_np(err), written >> 20);
        }
        written += (size_t)n;
    }
    close(fd);
    unlink(path);
    return escaped("wrote %zu MiB to %s", written >> 20, path);
}

static int shm_hog(void) { return fill("/dev/shm/hog", 65536); }
static int tmp_hog(void) { return fill("/tmp/hog", 65536); }
static int disk_fill(void) { return fill("/fill", 65536); }

static int inode_exhaustion(void) {
    mkdir("/inodes", 0700);
    char name[64];
    for (int i = 0; i < 10000000; i++) {
        snprintf(name, sizeof name, "/inodes/%d", i);
        int fd = open(name, O_CREAT | O_WRONLY, 0600);
        if (fd < 0) return contained("file creation refused after %d files (%s)", i, strerrorname_np(errno));
        close(fd);
    }
    return escaped("ten million files");
}

static void *spin(void *unused) {
    (void)unused;
    for (;;) __asm__ volatile("" ::: "memory");
    return NULL;
}

static int cpu_spin(void) {
    for (int i = 0; i < 8; i++) {
        pthread_t t;
        pthread_create(&t, NULL, spin, NULL);
    }
    sleep(3);
    return done("eight threads spun for three seconds");
}

static int wall_clock(void) {
    for (;;) pause();
    return escaped("woke from pause");
}

static int daemonize(void) {
    pid_t pid = fork();
    if (pid == 0) {
        setsid();
        if (fork() == 0) {
            // The grandchild, re-parented to init, in a session of its own.
            for (;;) sleep(60);
        }
        _exit(0);
    }
    waitpid(pid, NULL, 0);
    return done("a double-forked daemon is left behind");
}

static int zombie_pile(void) {
    // Orphans that die at once: init must reap them all.
    for (int i = 0; i < 200; i++) {
        pid_t pid = fork();
        if (pid == 0) {
            if (fork() == 0) _exit(0);
            _exit(0);
        }
        waitpid(pid, NULL, 0);
    }
    usleep(500000);
    int zombies = 0;
    DIR *proc = opendir("/proc");
    struct dirent *e;
    while (proc && (e = readdir(proc))) {
        char path[300], line[256];
        snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        if (fgets(line, sizeof line, f) && strstr(line, ") Z ")) zombies++;
        fclose(f);
    }
    if (proc) closedir(proc);
    if (zombies < 5) return contained("%d zombies left of 200 orphans (init reaps)", zombies);
    return escaped("%d zombies pile up", zombies);
}

static int fd_exhaustion(void) {
    int count = 0;
    for (; count < 10000000; count++) {
        if (open("/", O_RDONLY | O_DIRECTORY) < 0) {
            int err = errno;
            return contained("open refused after %d fds (%s)", count, strerrorname_np(err));
        }
    }
    return escaped("ten million fds");
}

// ---- kernel interfaces -----------------------------------------------------------

/// Writes `text` to a /proc file; contained when that fails or the file is /dev/null.
static int proc_write(const char *path, const char *text) {
    int fd = open(path, O_WRONLY);
    if (fd < 0) return contained("open %s: %s", path, strerrorname_np(errno));
    struct stat st;
    fstat(fd, &st);
    if (S_ISCHR(st.st_mode) && major(st.st_rdev) == 1 && minor(st.st_rdev) == 3) {
        close(fd);
        return contained("%s is /dev/null here", path);
    }
    ssize_t n = write(fd, text, strlen(text));
    int err = errno;
    close(fd);
    if (n < 0) return contained("write %s: %s", path, strerrorname_np(err));
    return escaped("wrote %s", path);
}

static int sysrq(void) { return proc_write("/proc/sysrq-trigger", "h"); }
static int core_pattern(void) { return proc_write("/proc/sys/kernel/core_pattern", "|/tmp/x"); }
static int modprobe(void) { return proc_write("/proc/sys/kernel/modprobe", "/tmp/x"); }

static int release_agent(void) {
    if (unshare(CLONE_NEWCGROUP | CLONE_NEWNS) == 0) return escaped("unshare(NEWCGROUP|NEWNS) succeeded");
    int err = errno;
    mkdir("/tmp/cg", 0700);
    if (mount("cgroup", "/tmp/cg", "cgroup", 0, "rdma") == 0) return escaped("mounted a cgroup v1 hierarchy");
    return contained("unshare: %s; mount cgroup: %s", strerrorname_np(err), strerrorname_np(errno));
}

static int mount_attack(void) {
    mkdir("/tmp/m", 0700);
    return TRY("mount tmpfs", mount("none", "/tmp/m", "tmpfs", 0, NULL));
}

static int new_mount_api(void) {
    long fs = syscall(SYS_fsopen, "tmpfs", 0);
    if (fs >= 0) return escaped("fsopen(tmpfs) succeeded");
    int err = errno;
    long tree = syscall(SYS_open_tree, AT_FDCWD, "/", 1 /* OPEN_TREE_CLONE */);
    if (tree >= 0) return escaped("open_tree(/, CLONE) succeeded");
    return contained("fsopen: %s; open_tree: %s", strerrorname_np(err), strerrorname_np(errno));
}

static int userns_unshare(void) { return TRY("unshare(CLONE_NEWUSER)", unshare(CLONE_NEWUSER)); }

static int userns_clone(void) {
    long r = syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0);
    if (r == 0) _exit(0);
    if (r > 0) return escaped("clone(CLONE_NEWUSER) made %ld", r);
    int err = errno;
    uint64_t args[11] = {CLONE_NEWUSER, 0, 0, 0, SIGCHLD, 0, 0, 0, 0, 0, 0};
    long r3 = syscall(SYS_clone3, args, 88);
    if (r3 == 0) _exit(0);
    if (r3 > 0) return escaped("clone3(CLONE_NEWUSER) made %ld", r3);
    return contained("clone: %s; clone3: %s", strerrorname_np(err), strerrorname_np(errno));
}

static int setns_attack(void) {
    const char *names[] = {"mnt", "net", "user", "pid", "uts", "ipc", "cgroup"};
    for (int i = 0; i < 7; i++) {
        char path[64];
        snprintf(path, sizeof path, "/proc/1/ns/%s", names[i]);
        int fd = open(path, O_RDONLY);
        if (fd < 0) continue;
        if (setns(fd, 0) == 0) return escaped("setns into %s", path);
        close(fd);
    }
    return contained("setns into every /proc/1/ns/* failed (%s)", strerrorname_np(errno));
}

static int capabilities(void) {
    const char *caps[] = {"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"};
    for (int i = 0; i < 5; i++) {
        const char *v = status_field(caps[i]);
        if (strspn(v, "0") != strlen(v)) return escaped("%s is %s", caps[i], v);
    }
    struct {
        uint32_t version;
        int pid;
    } header = {0x20080522, 0};
    uint32_t data[6] = {~0u, ~0u, ~0u, ~0u, ~0u, ~0u};
    if (syscall(SYS_capset, &header, data) == 0) return escaped("capset raised every capability");
    return contained("no capability in any set; capset to raise them: %s", strerrorname_np(errno));
}

static int dangerous_syscalls(void) {
    struct {
        const char *name;
        long nr;
    } calls[] = {
        {"ptrace", SYS_ptrace}, {"bpf", SYS_bpf}, {"perf_event_open", SYS_perf_event_open},
        {"userfaultfd", SYS_userfaultfd}, {"io_uring_setup", SYS_io_uring_setup}, {"keyctl", SYS_keyctl},
        {"add_key", SYS_add_key}, {"request_key", SYS_request_key}, {"kexec_load", SYS_kexec_load},
        {"init_module", SYS_init_module}, {"finit_module", SYS_finit_module}, {"delete_module", SYS_delete_module},
        {"reboot", SYS_reboot}, {"swapon", SYS_swapon}, {"syslog", SYS_syslog}, {"acct", SYS_acct},
        {"settimeofday", SYS_settimeofday}, {"clock_settime", SYS_clock_settime}, {"iopl", SYS_iopl},
        {"ioperm", SYS_ioperm}, {"pivot_root", SYS_pivot_root}, {"chroot", SYS_chroot},
        {"open_by_handle_at", SYS_open_by_handle_at}, {"name_to_handle_at", SYS_name_to_handle_at},
        {"process_vm_readv", SYS_process_vm_readv}, {"kcmp", SYS_kcmp}, {"pidfd_getfd", SYS_pidfd_getfd},
    };
    for (size_t i = 0; i < sizeof calls / sizeof calls[0]; i++) {
        errno = 0;
        long r = syscall(calls[i].nr, 0, 0, 0, 0, 0, 0);
        if (r >= 0 || (errno != EPERM && errno != ENOSYS)) {
            return escaped("%s answered %ld (%s), not the filter's EPERM", calls[i].name, r, strerrorname_np(errno));
        }
    }
    return contained("%zu dangerous system calls refused", sizeof calls / sizeof calls[0]);
}

static int one_call(const char *name, long nr, long a0, long a1, long a2) {
    errno = 0;
    long r = syscall(nr, a0, a1, a2, 0, 0, 0);
    if (r >= 0) return escaped("%s succeeded (%ld)", name, r);
    return contained("%s: %s", name, strerrorname_np(errno));
}

static int keyctl_attack(void) { return one_call("keyctl(GET_KEYRING_ID)", SYS_keyctl, 0, -3, 0); }
static int add_key_attack(void) { return one_call("add_key", SYS_add_key, (long)"user", (long)"k", (long)"v"); }
static int bpf_attack(void) { return one_call("bpf(MAP_CREATE)", SYS_bpf, 0, 0, 0); }
static int perf_attack(void) {
    char attr[128] = {0};
    return one_call("perf_event_open", SYS_perf_event_open, (long)attr, 0, -1);
}
static int userfaultfd_attack(void) { return one_call("userfaultfd", SYS_userfaultfd, 0, 0, 0); }
static int io_uring_attack(void) {
    char params[120] = {0};
    return one_call("io_uring_setup", SYS_io_uring_setup, 8, (long)params, 0);
}

static int open_by_handle(void) {
    struct {
        unsigned int bytes;
        int type;
        unsigned char f[8];
    } handle;
    int root = open("/", O_RDONLY | O_DIRECTORY);
    for (unsigned long ino = 2; ino < 2000; ino++) {
        handle.bytes = 8;
        handle.type = 1;  // FILEID_INO32_GEN
        memcpy(handle.f, &ino, 4);
        memset(handle.f + 4, 0, 4);
        long fd = syscall(SYS_open_by_handle_at, root, &handle, O_RDONLY);
        if (fd >= 0) return escaped("open_by_handle_at opened inode %lu", ino);
        if (errno != EPERM) return escaped("open_by_handle_at reached the file system (%s)", strerrorname_np(errno));
    }
    return contained("open_by_handle_at refused for 1998 inodes (EPERM)");
}

static int x32_call(void) {
    syscall(0x40000000 | SYS_getpid);
    return 0;
}

static int x32(void) {
    int sig = 0;
    in_child(x32_call, &sig);
    if (sig == SIGSYS) return contained("the x32 call killed its process (SIGSYS)");
    return escaped("the x32 call returned (signal %d)", sig);
}

static int int80_call(void) {
#if defined(__x86_64__)
    long r;
    __asm__ volatile("int $0x80" : "=a"(r) : "a"(20) : "memory");
    return (int)r;
#else
    return 0;
#endif
}

static int int80(void) {
#if defined(__x86_64__)
    int sig = 0;
    in_child(int80_call, &sig);
    if (sig == SIGSYS) return contained("int 0x80 killed its process (SIGSYS)");
    return escaped("int 0x80 returned (signal %d)", sig);
#else
    return contained("no int 0x80 on this architecture");
#endif
}

// ---- processes and files -----------------------------------------------------------

/// Every pid visible in /proc but ours.
static int visible_pids(pid_t *pids, int max) {
    int n = 0;
    DIR *proc = opendir("/proc");
    struct dirent *e;
    while (proc && (e = readdir(proc)) && n < max) {
        pid_t pid = (pid_t)atoi(e->d_name);
        if (pid > 0 && pid != getpid()) pids[n++] = pid;
    }
    if (proc) closedir(proc);
    return n;
}

static int ptrace_attack(void) {
    pid_t pids[4096];
    int n = visible_pids(pids, 4096);
    for (int i = 0; i < n; i++) {
        if (syscall(SYS_ptrace, 16 /* PTRACE_ATTACH */, pids[i], 0, 0) == 0) return escaped("attached to %d", pids[i]);
    }
    // Pids that are not visible: the supervisor's range.
    for (pid_t pid = 2; pid < 5000; pid++) {
        if (syscall(SYS_ptrace, 16, pid, 0, 0) == 0) return escaped("attached to %d", pid);
    }
    return contained("ptrace refused for every pid (%s)", strerrorname_np(errno));
}

static int process_vm(void) {
    char local[64], remote[64] = {0};
    struct iovec l = {local, sizeof local}, r = {remote, sizeof remote};
    for (pid_t pid = 1; pid < 5000; pid++) {
        if (pid == getpid()) continue;
        if (syscall(SYS_process_vm_readv, pid, &l, 1, &r, 1, 0) >= 0) return escaped("read the memory of %d", pid);
    }
    return contained("process_vm_readv refused for every pid (%s)", strerrorname_np(errno));
}

/// argv: the canary's host path and name.
static int canary_paths(const char *path, const char *name) {
    char candidate[4096];
    const char *prefixes[] = {"", "/proc/1/root", "/proc/self/root", "/proc/1/cwd", "/../../../..", "/tmp/../../.."};
    for (size_t i = 0; i < sizeof prefixes / sizeof prefixes[0]; i++) {
        snprintf(candidate, sizeof candidate, "%s%s", prefixes[i], path);
        if (access(candidate, F_OK) == 0) return escaped("reached %s", candidate);
    }
    // Every process's cwd, root and exe.
    pid_t pids[4096];
    int n = visible_pids(pids, 4096);
    for (int i = 0; i < n; i++) {
        const char *links[] = {"cwd", "root"};
        for (int k = 0; k < 2; k++) {
            snprintf(candidate, sizeof candidate, "/proc/%d/%s%s", pids[i], links[k], path);
            if (access(candidate, F_OK) == 0) return escaped("reached %s", candidate);
        }
    }
    (void)name;
    return contained("no path to %s: not through /proc/*/root, /proc/*/cwd or .. chains", path);
}

static int find_name(const char *dir, const char *name, int depth, char *found, size_t size) {
    if (depth > 12) return 0;
    DIR *d = opendir(dir);
    if (!d) return 0;
    struct dirent *e;
    int hit = 0;
    while (!hit && (e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", strcmp(dir, "/") == 0 ? "" : dir, e->d_name);
        if (strcmp(e->d_name, name) == 0) {
            snprintf(found, size, "%s", path);
            hit = 1;
        } else if (e->d_type == DT_DIR && strcmp(path, "/proc") != 0) {
            hit = find_name(path, name, depth + 1, found, size);
        }
    }
    closedir(d);
    return hit;
}

static int find_canary(const char *name) {
    char found[4096];
    if (find_name("/", name, 0, found, sizeof found)) return escaped("found %s", found);
    return contained("%s is nowhere in the sandbox's tree", name);
}

static int supervisor_binary(void) {
    const char *targets[] = {"/proc/self/exe", "/proc/1/exe"};
    for (int i = 0; i < 2; i++) {
        int fd = open(targets[i], O_WRONLY);
        if (fd >= 0) {
            close(fd);
            return escaped("opened %s for writing", targets[i]);
        }
    }
    return contained("/proc/self/exe and /proc/1/exe cannot be opened for writing (%s)", strerrorname_np(errno));
}

static int leaked_fds(void) {
    for (int fd = 3; fd < 1024; fd++) {
        struct stat st;
        if (fstat(fd, &st) == 0) {
            char link[64], target[256] = {0};
            snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
            readlink(link, target, sizeof target - 1);
            return escaped("fd %d is open: %s", fd, target);
        }
    }
    char cwd[4096];
    if (!getcwd(cwd, sizeof cwd) || cwd[0] != '/') return escaped("the working directory is outside the root");
    // From the cwd, .. never leaves the root.
    struct stat root, up;
    stat("/", &root);
    stat("/../../..", &up);
    if (root.st_ino != up.st_ino || root.st_dev != up.st_dev) return escaped(".. leaves the root");
    return contained("only fds 0-2 are open; cwd %s is inside the root", cwd);
}

static int terminal_injection(void) {
    char c = 'x';
    // TIOCSTI and TIOCLINUX, and their values with high bits set (the kernel compares
    // the low 32 bits of the command).
    unsigned long commands[] = {0x5412, 0x541C, 0x100005412ul, 0x10000541Cul};
    for (int i = 0; i < 4; i++) {
        errno = 0;
        if (syscall(SYS_ioctl, 0, commands[i], &c) == 0) return escaped("ioctl %#lx succeeded", commands[i]);
        if (errno != EPERM) return escaped("ioctl %#lx reached the tty layer (%s)", commands[i], strerrorname_np(errno));
    }
    return contained("TIOCSTI and TIOCLINUX refused, high-bit variants too (EPERM)");
}

/// Re-executes the image's setuid-root, file-capability copy of this program.
static int setuid_binary(void) {
    if (access("/setuid-attack", X_OK) != 0) return contained("no setuid binary in this image");
    pid_t pid = fork();
    if (pid == 0) {
        execl("/setuid-attack", "/setuid-attack", "report-ids", (char *)NULL);
        _exit(127);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return contained("the setuid, file-capability binary gained nothing");
    return escaped("the setuid binary ran with privileges (status %d)", status);
}

/// Run as the setuid copy: exit 0 when it gained no privilege.
static int report_ids(void) {
    uid_t r, e, s;
    getresuid(&r, &e, &s);
    const char *eff = status_field("CapEff");
    return (r == e && e == s && strspn(eff, "0") == strlen(eff)) ? 0 : 1;
}

static int device_nodes(void) {
    if (mknod("/tmp/mem", S_IFCHR | 0600, makedev(1, 1)) == 0) return escaped("mknod /dev/mem succeeded");
    int err = errno;
    const char *absent[] = {"/dev/mem", "/dev/kmem", "/dev/kmsg", "/dev/port", "/dev/sda", "/dev/vda"};
    for (int i = 0; i < 6; i++) {
        if (access(absent[i], F_OK) == 0) return escaped("%s exists", absent[i]);
    }
    return contained("mknod: %s; no /dev/mem, /dev/kmem, /dev/kmsg, /dev/port or disks", strerrorname_np(err));
}

static int cgroup_move(void) {
    if (access("/sys/fs/cgroup", F_OK) == 0) return escaped("/sys/fs/cgroup is visible");
    mkdir("/tmp/cg2", 0700);
    if (mount("cgroup2", "/tmp/cg2", "cgroup2", 0, NULL) == 0) return escaped("mounted cgroup2");
    return contained("no cgroup file system visible, and mounting one failed (%s)", strerrorname_np(errno));
}

// ---- network -------------------------------------------------------------------

static int socket_attack(const char *what, int family, int type, int protocol) {
    int fd = socket(family, type, protocol);
    if (fd >= 0) {
        close(fd);
        return escaped("%s socket created", what);
    }
    return contained("%s socket: %s", what, strerrorname_np(errno));
}

static int raw_socket(void) { return socket_attack("raw IPv4", AF_INET, SOCK_RAW, IPPROTO_RAW); }
static int packet_socket(void) {
    if (socket_attack("packet", AF_PACKET, SOCK_RAW, htons(ETH_P_ALL)) != 0) return 1;
    // The obsolete form: AF_INET with SOCK_PACKET becomes a packet socket.
    return socket_attack("AF_INET SOCK_PACKET", AF_INET, 10 /* SOCK_PACKET */, htons(ETH_P_ALL));
}
static int vsock_socket(void) { return socket_attack("vsock", 40 /* AF_VSOCK */, SOCK_STREAM, 0); }
static int alg_socket(void) { return socket_attack("alg", 38 /* AF_ALG */, SOCK_SEQPACKET, 0); }

/// argv: a port the host listens on, on its loopback.
static int host_loopback(const char *port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(port))};
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&address, sizeof address) == 0) return escaped("connected to the host's 127.0.0.1:%s", port);
    return contained("127.0.0.1:%s is the sandbox's own loopback (%s)", port, strerrorname_np(errno));
}

/// argv: the name of an abstract unix socket the host listens on.
static int abstract_socket(const char *name) {
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un address = {.sun_family = AF_UNIX};
    size_t n = strlen(name);
    memcpy(address.sun_path + 1, name, n);
    if (connect(fd, (struct sockaddr *)&address, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n)) == 0)
        return escaped("connected to the host's abstract socket @%s", name);
    return contained("@%s is not reachable (%s)", name, strerrorname_np(errno));
}

static int routes(void) {
    FILE *f = fopen("/proc/net/route", "r");
    char line[512];
    int entries = 0;
    while (f && fgets(line, sizeof line, f)) {
        if (strncmp(line, "Iface", 5) != 0 && strncmp(line, "lo", 2) != 0) entries++;
    }
    if (f) fclose(f);
    f = fopen("/proc/net/dev", "r");
    int interfaces = 0;
    while (f && fgets(line, sizeof line, f)) {
        if (strchr(line, ':') && !strstr(line, "lo:")) interfaces++;
    }
    if (f) fclose(f);
    if (entries || interfaces) return escaped("%d routes and %d interfaces besides lo", entries, interfaces);
    return contained("only lo, and no route but loopback");
}

// ---- signals and time -------------------------------------------------------------

static int kill_all(void) {
    // The child signals everything it can see; that takes this process (its parent) too.
    pid_t pid = fork();
    if (pid == 0) {
        kill(-1, SIGKILL);
        _exit(0);
    }
    waitpid(pid, NULL, 0);
    return done("kill(-1, SIGKILL) was sent");
}

static int kill_supervisor(void) {
    if (getppid() != 1) return escaped("the parent is %d, not init", getppid());
    kill(1, SIGKILL);
    usleep(100000);
    if (kill(1, 0) != 0) return escaped("init is gone");
    // The supervisor is not in this pid namespace: no pid names it.
    return contained("init ignores SIGKILL from inside; the supervisor has no pid here");
}

static int realtime(void) {
    // A SCHED_FIFO spinner would not be held by the CFS quota.
    struct sched_param param = {.sched_priority = 1};
    return TRY("sched_setscheduler(SCHED_FIFO)", sched_setscheduler(0, SCHED_FIFO, &param));
}

static int clock_attack(void) {
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    t.tv_sec += 3600;
    return TRY("clock_settime", syscall(SYS_clock_settime, CLOCK_REALTIME, &t));
}

static int hostname_attack(void) {
    if (sethostname("escaped", 7) == 0) {
        char name[64];
        gethostname(name, sizeof name);
        return contained("sethostname changed only the sandbox's own UTS namespace (%s)", name);
    }
    return contained("sethostname: %s", strerrorname_np(errno));
}

// ---- table -------------------------------------------------------------------------

struct attack {
    const char *name;
    int (*run)(void);
    int (*run_arg)(const char *);
    int (*run_args)(const char *, const char *);
};

static int canary_name(const char *name) { return find_canary(name); }

static const struct attack attacks[] = {
    {"fork-bomb", fork_bomb, 0, 0}, {"thread-bomb", thread_bomb, 0, 0}, {"memory-hog", memory_hog, 0, 0},
    {"shm-hog", shm_hog, 0, 0}, {"tmp-hog", tmp_hog, 0, 0}, {"disk-fill", disk_fill, 0, 0},
    {"inode-exhaustion", inode_exhaustion, 0, 0}, {"cpu-spin", cpu_spin, 0, 0}, {"wall-clock", wall_clock, 0, 0},
    {"daemon", daemonize, 0, 0}, {"zombie-pile", zombie_pile, 0, 0}, {"fd-exhaustion", fd_exhaustion, 0, 0},
    {"sysrq-trigger", sysrq, 0, 0}, {"core-pattern", core_pattern, 0, 0}, {"modprobe", modprobe, 0, 0},
    {"release-agent", release_agent, 0, 0}, {"mount", mount_attack, 0, 0}, {"new-mount-api", new_mount_api, 0, 0},
    {"userns-unshare", userns_unshare, 0, 0}, {"userns-clone", userns_clone, 0, 0}, {"setns", setns_attack, 0, 0},
    {"capabilities", capabilities, 0, 0}, {"dangerous-syscalls", dangerous_syscalls, 0, 0}, {"x32", x32, 0, 0},
    {"int80", int80, 0, 0}, {"keyctl", keyctl_attack, 0, 0}, {"add-key", add_key_attack, 0, 0},
    {"bpf", bpf_attack, 0, 0}, {"perf-event-open", perf_attack, 0, 0}, {"userfaultfd", userfaultfd_attack, 0, 0},
    {"io-uring", io_uring_attack, 0, 0}, {"open-by-handle", open_by_handle, 0, 0}, {"ptrace", ptrace_attack, 0, 0},
    {"process-vm-readv", process_vm, 0, 0}, {"canary-paths", 0, 0, canary_paths}, {"find-canary", 0, canary_name, 0},
    {"supervisor-binary", supervisor_binary, 0, 0}, {"leaked-fds", leaked_fds, 0, 0},
    {"terminal-injection", terminal_injection, 0, 0}, {"setuid-binary", setuid_binary, 0, 0},
    {"device-nodes", device_nodes, 0, 0}, {"cgroup-move", cgroup_move, 0, 0}, {"raw-socket", raw_socket, 0, 0},
    {"packet-socket", packet_socket, 0, 0}, {"vsock-socket", vsock_socket, 0, 0}, {"alg-socket", alg_socket, 0, 0},
    {"host-loopback", 0, host_loopback, 0}, {"abstract-socket", 0, abstract_socket, 0}, {"routes", routes, 0, 0},
    {"kill-all", kill_all, 0, 0}, {"kill-supervisor", kill_supervisor, 0, 0}, {"realtime", realtime, 0, 0},
    {"clock-settime", clock_attack, 0, 0},
    {"sethostname", hostname_attack, 0, 0},
};

int main(int argc, char **argv) {
    if (argc >= 2 && strcmp(argv[1], "list") == 0) {
        for (size_t i = 0; i < sizeof attacks / sizeof attacks[0]; i++) printf("%s\n", attacks[i].name);
        return 0;
    }
    if (argc >= 2 && strcmp(argv[1], "report-ids") == 0) return report_ids();
    char why[128];
    if (!confined(why, sizeof why)) {
        fprintf(stderr, "hangar-attack: refusing to run outside a sandbox: %s\n", why);
        printf("REFUSED: not confined (%s)\n", why);
        return 3;
    }
    if (argc < 2) {
        fprintf(stderr, "usage: hangar-attack ATTACK [ARG...] | hangar-attack list\n");
        return 2;
    }
    for (size_t i = 0; i < sizeof attacks / sizeof attacks[0]; i++) {
        const struct attack *a = &attacks[i];
        if (strcmp(a->name, argv[1]) != 0) continue;
        if (a->run) return a->run();
        if (a->run_arg && argc >= 3) return a->run_arg(argv[2]);
        if (a->run_args && argc >= 4) return a->run_args(argv[2], argv[3]);
        fprintf(stderr, "hangar-attack: %s needs arguments\n", argv[1]);
        return 2;
    }
    fprintf(stderr, "hangar-attack: unknown attack %s\n", argv[1]);
    return 2;
}
