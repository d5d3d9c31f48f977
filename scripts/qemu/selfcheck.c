/*
 * Self-check payload for the QEMU harness (scripts/qemu/run.sh; `make qemu-check`).
 * Built with `gcc -static -O2`; runs as root (PID 2) inside the guest. Proves that the guest
 * gives Hangar's cgroup v2 driver what it needs:
 *
 *   cgroup2          cgroup2 is mounted at /sys/fs/cgroup; memory, pids, cpu available and
 *                    enabled for children of the root group
 *   memory.oom       a forked child moved into a group with memory.max=32M that touches
 *                    128M is OOM-killed (SIGKILL), and memory.events shows oom_kill >= 1
 *   pids.max         with pids.max=4, fork fails with EAGAIN exactly at the limit
 *   cpu.max          cpu.max and cpu.weight can be written and read back
 *   cgroup.kill      writing 1 to cgroup.kill kills every process in the group (also a
 *                    grandchild), the group becomes unpopulated and can be removed
 *   clone3           clone3(CLONE_INTO_CGROUP) starts a child directly in a given group
 *   userns+overlay   unshare(CLONE_NEWUSER|CLONE_NEWNS), uid/gid maps written by the parent,
 *                    tmpfs + overlay mount inside the user namespace, pivot_root into the
 *                    overlay — in the guest's switched root
 *   idmap DIR        for each DIR given as an argument (e.g. a --disk mount point): an
 *                    idmapped mount of DIR works and shifts owners as Hangar needs
 *
 * One line per check: "PASS name: detail" or "FAIL name: detail"; "INFO" lines report facts
 * that do not fail the run. Exit status 0 only if every check passed.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CG "/sys/fs/cgroup"
#define CGROUP2_SUPER_MAGIC 0x63677270

#ifndef CLONE_INTO_CGROUP
#define CLONE_INTO_CGROUP 0x200000000ULL
#endif

/* Same layout as the kernel's struct clone_args (CLONE_ARGS_SIZE_VER2); declared here to
 * avoid mixing <linux/sched.h> with glibc's <sched.h>. */
struct clone_args_v2 {
    uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls;
    uint64_t set_tid, set_tid_size, cgroup;
};

static int failures;
static double check_started;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void result(int ok, const char *name, const char *fmt, ...) {
    char detail[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    if (!ok) failures++;
    printf("%s %s: %s (%.0f ms)\n", ok ? "PASS" : "FAIL", name, detail, (now() - check_started) * 1000);
    fflush(stdout);
}

static void info(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    printf("INFO ");
    vprintf(fmt, ap);
    printf("\n");
    fflush(stdout);
    va_end(ap);
}

/* --- small file helpers ----------------------------------------------------------------- */

static int write_file(const char *path, const char *value) {
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t n = write(fd, value, strlen(value));
    int saved = errno;
    close(fd);
    errno = saved;
    return n == (ssize_t)strlen(value) ? 0 : -1;
}

static int read_file(const char *path, char *buf, size_t size) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t n = read(fd, buf, size - 1);
    close(fd);
    if (n < 0) return -1;
    buf[n] = 0;
    return 0;
}

/* Value of "key N" in a flat-keyed file (memory.events, pids.events, cgroup.events). */
static long keyed(const char *path, const char *key) {
    char buf[4096];
    if (read_file(path, buf, sizeof buf) != 0) return -1;
    size_t k = strlen(key);
    for (char *line = buf; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
        if (strncmp(line, key, k) == 0 && line[k] == ' ') return strtol(line + k + 1, NULL, 10);
    }
    return -1;
}

static int has_word(const char *text, const char *word) {
    size_t n = strlen(word);
    for (const char *p = text; (p = strstr(p, word)); p += n) {
        if ((p == text || p[-1] == ' ') && (p[n] == 0 || p[n] == ' ' || p[n] == '\n')) return 1;
    }
    return 0;
}

static char *group(const char *name) {
    static char path[256];
    snprintf(path, sizeof path, CG "/%s", name);
    return path;
}

static int make_group(const char *name) {
    rmdir(group(name)); /* leftover of an earlier run in the same boot: start clean */
    return mkdir(group(name), 0755);
}

static int group_write(const char *name, const char *file, const char *value) {
    char path[320];
    snprintf(path, sizeof path, CG "/%s/%s", name, file);
    return write_file(path, value);
}

static long group_keyed(const char *name, const char *file, const char *key) {
    char path[320];
    snprintf(path, sizeof path, CG "/%s/%s", name, file);
    return keyed(path, key);
}

static int move_pid(const char *name, pid_t pid) {
    char value[32];
    snprintf(value, sizeof value, "%d", pid);
    return group_write(name, "cgroup.procs", value);
}

/* Waits until the group has no process left (cgroup.events "populated 0"), up to ~5 s. */
static int wait_unpopulated(const char *name) {
    for (int i = 0; i < 500; i++) {
        if (group_keyed(name, "cgroup.events", "populated") == 0) return 0;
        usleep(10000);
    }
    return -1;
}

static const char *describe(int status) {
    static char buf[64];
    if (WIFEXITED(status)) snprintf(buf, sizeof buf, "exit %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status)) snprintf(buf, sizeof buf, "signal %s", strsignal(WTERMSIG(status)));
    else snprintf(buf, sizeof buf, "status 0x%x", status);
    return buf;
}

/* A child that blocks until the parent says go (after moving it into a group). */
struct gate { int fds[2]; };
static void gate_open(struct gate *g) { if (pipe2(g->fds, O_CLOEXEC) != 0) { perror("pipe"); exit(2); } }
static void gate_wait(struct gate *g) { char c; close(g->fds[1]); (void)!read(g->fds[0], &c, 1); close(g->fds[0]); }
static void gate_release(struct gate *g) { close(g->fds[0]); (void)!write(g->fds[1], "x", 1); close(g->fds[1]); }

/* --- checks ----------------------------------------------------------------------------- */

static void check_cgroup2(void) {
    check_started = now();
    struct statfs sf;
    if (statfs(CG, &sf) != 0 || sf.f_type != CGROUP2_SUPER_MAGIC) {
        result(0, "cgroup2", CG " is not a cgroup2 mount");
        return;
    }
    char available[512] = "", enabled[512] = "";
    read_file(CG "/cgroup.controllers", available, sizeof available);
    read_file(CG "/cgroup.subtree_control", enabled, sizeof enabled);
    available[strcspn(available, "\n")] = 0;
    enabled[strcspn(enabled, "\n")] = 0;
    const char *need[] = {"memory", "pids", "cpu"};
    int ok = 1;
    for (int i = 0; i < 3; i++) ok &= has_word(available, need[i]) && has_word(enabled, need[i]);
    result(ok, "cgroup2", "mounted at " CG "; controllers [%s]; enabled for children [%s]", available, enabled);
}

static void check_memory_oom(void) {
    check_started = now();
    const char *g = "selfcheck-memory";
    if (make_group(g) != 0) { result(0, "memory.oom", "mkdir %s: %s", group(g), strerror(errno)); return; }
    if (group_write(g, "memory.max", "32M") != 0) { result(0, "memory.oom", "memory.max: %s", strerror(errno)); rmdir(group(g)); return; }
    group_write(g, "memory.swap.max", "0"); /* there is no swap in the guest; just in case */
    struct gate gate;
    gate_open(&gate);
    pid_t pid = fork();
    if (pid == 0) {
        gate_wait(&gate);
        size_t size = 128u << 20;
        volatile char *p = malloc(size);
        if (!p) _exit(3);
        for (size_t i = 0; i < size; i += 4096) p[i] = 1; /* touch: charge every page */
        _exit(0); /* survived: the limit did not hold */
    }
    int moved = move_pid(g, pid);
    int move_errno = errno;
    gate_release(&gate);
    int status;
    waitpid(pid, &status, 0);
    long oom_kill = group_keyed(g, "memory.events", "oom_kill");
    long max_seen = group_keyed(g, "memory.events", "max");
    char maxval[64] = "";
    read_file(CG "/selfcheck-memory/memory.max", maxval, sizeof maxval);
    maxval[strcspn(maxval, "\n")] = 0;
    int ok = moved == 0 && WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL && oom_kill >= 1;
    if (moved != 0)
        result(0, "memory.oom", "moving the child into the group: %s", strerror(move_errno));
    else
        result(ok, "memory.oom", "memory.max=%s, child touching 128M ended with %s; memory.events oom_kill=%ld max=%ld",
               maxval, describe(status), oom_kill, max_seen);
    wait_unpopulated(g);
    rmdir(group(g));
}

static void check_pids_max(void) {
    check_started = now();
    const char *g = "selfcheck-pids";
    const int limit = 4;
    if (make_group(g) != 0) { result(0, "pids.max", "mkdir: %s", strerror(errno)); return; }
    char value[16];
    snprintf(value, sizeof value, "%d", limit);
    if (group_write(g, "pids.max", value) != 0) { result(0, "pids.max", "pids.max: %s", strerror(errno)); rmdir(group(g)); return; }
    struct gate gate;
    gate_open(&gate);
    int report[2];
    if (pipe2(report, O_CLOEXEC) != 0) { result(0, "pids.max", "pipe: %s", strerror(errno)); return; }
    pid_t pid = fork();
    if (pid == 0) {
        close(report[0]);
        gate_wait(&gate);
        /* The child itself counts as one: limit-1 forks must succeed, the next must fail. */
        pid_t kids[64];
        int forked = 0, err = 0;
        for (; forked < 64; forked++) {
            pid_t k = fork();
            if (k == 0) { pause(); _exit(0); }
            if (k < 0) { err = errno; break; }
            kids[forked] = k;
        }
        int out[2] = {forked, err};
        (void)!write(report[1], out, sizeof out);
        for (int i = 0; i < forked; i++) kill(kids[i], SIGKILL);
        for (int i = 0; i < forked; i++) waitpid(kids[i], NULL, 0);
        _exit(0);
    }
    close(report[1]);
    int moved = move_pid(g, pid);
    int move_errno = errno;
    gate_release(&gate);
    int out[2] = {-1, 0};
    (void)!read(report[0], out, sizeof out);
    close(report[0]);
    waitpid(pid, NULL, 0);
    long events_max = group_keyed(g, "pids.events", "max");
    if (moved != 0) {
        result(0, "pids.max", "moving the child into the group: %s", strerror(move_errno));
    } else {
        int ok = out[0] == limit - 1 && out[1] == EAGAIN;
        result(ok, "pids.max", "pids.max=%d: %d forks succeeded, the next failed with %s; pids.events max=%ld",
               limit, out[0], out[1] ? strerrorname_np(out[1]) : "nothing", events_max);
    }
    wait_unpopulated(g);
    rmdir(group(g));
}

static void check_cpu_max(void) {
    check_started = now();
    const char *g = "selfcheck-cpu";
    if (make_group(g) != 0) { result(0, "cpu.max", "mkdir: %s", strerror(errno)); return; }
    char max[64] = "", weight[64] = "";
    int ok = group_write(g, "cpu.max", "50000 100000") == 0 && group_write(g, "cpu.weight", "50") == 0;
    int saved = errno;
    read_file(CG "/selfcheck-cpu/cpu.max", max, sizeof max);
    read_file(CG "/selfcheck-cpu/cpu.weight", weight, sizeof weight);
    max[strcspn(max, "\n")] = 0;
    weight[strcspn(weight, "\n")] = 0;
    ok = ok && strcmp(max, "50000 100000") == 0 && strcmp(weight, "50") == 0;
    result(ok, "cpu.max", "cpu.max=\"%s\" cpu.weight=\"%s\"%s%s", max, weight, ok ? "" : "; write: ",
           ok ? "" : strerror(saved));
    rmdir(group(g));
}

static void check_cgroup_kill(void) {
    check_started = now();
    const char *g = "selfcheck-kill";
    if (make_group(g) != 0) { result(0, "cgroup.kill", "mkdir: %s", strerror(errno)); return; }
    enum { N = 3 };
    pid_t pids[N];
    struct gate gates[N];
    int moved = 0;
    for (int i = 0; i < N; i++) {
        gate_open(&gates[i]);
        pids[i] = fork();
        if (pids[i] == 0) {
            gate_wait(&gates[i]);
            /* a grandchild too: cgroup.kill must reach processes the caller never saw */
            if (fork() == 0) { for (;;) pause(); }
            for (;;) pause();
        }
        moved += move_pid(g, pids[i]) == 0;
        gate_release(&gates[i]);
    }
    /* let the grandchildren be born (the group then holds 2*N processes) */
    for (int i = 0; i < 500; i++) {
        char procs[4096] = "";
        char path[320];
        snprintf(path, sizeof path, CG "/%s/cgroup.procs", g);
        read_file(path, procs, sizeof procs);
        int lines = 0;
        for (char *p = procs; *p; p++) lines += *p == '\n';
        if (lines >= 2 * N) break;
        usleep(10000);
    }
    int wrote = group_write(g, "cgroup.kill", "1");
    int write_errno = errno;
    int killed = 0;
    for (int i = 0; i < N; i++) {
        int status;
        if (wrote != 0) kill(pids[i], SIGKILL);
        waitpid(pids[i], &status, 0);
        killed += WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
    }
    /* the grandchildren are re-parented to PID 1 (guest-init), which reaps them */
    int empty = wait_unpopulated(g) == 0;
    int removed = rmdir(group(g)) == 0;
    if (wrote != 0)
        result(0, "cgroup.kill", "write: %s", strerror(write_errno));
    else
        result(moved == N && killed == N && empty && removed, "cgroup.kill",
               "%d/%d children SIGKILLed, group %s, rmdir %s", killed, N, empty ? "unpopulated" : "STILL POPULATED",
               removed ? "ok" : "failed");
}

static void check_clone3(void) {
    check_started = now();
    const char *g = "selfcheck-clone3";
    if (make_group(g) != 0) { result(0, "clone3", "mkdir: %s", strerror(errno)); return; }
    int fd = open(group(g), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) { result(0, "clone3", "open group: %s", strerror(errno)); rmdir(group(g)); return; }
    struct clone_args_v2 args;
    memset(&args, 0, sizeof args);
    args.flags = CLONE_INTO_CGROUP;
    args.exit_signal = SIGCHLD;
    args.cgroup = (uint64_t)fd;
    long pid = syscall(SYS_clone3, &args, sizeof args);
    if (pid == 0) {
        /* the child: in which group did it start? */
        char buf[256] = "";
        read_file("/proc/self/cgroup", buf, sizeof buf);
        _exit(strcmp(buf, "0::/selfcheck-clone3\n") == 0 ? 0 : 1);
    }
    int saved = errno;
    close(fd);
    if (pid < 0) {
        result(0, "clone3", "clone3(CLONE_INTO_CGROUP): %s", strerror(saved));
    } else {
        int status;
        waitpid((pid_t)pid, &status, 0);
        result(WIFEXITED(status) && WEXITSTATUS(status) == 0, "clone3",
               "clone3(CLONE_INTO_CGROUP) child %s /proc/self/cgroup = 0::/%s", WIFEXITED(status) && WEXITSTATUS(status) == 0 ? "saw" : "did NOT see", g);
    }
    rmdir(group(g));
}

/* Child side of the user namespace check; returns the failing step, 0 on success. */
static int userns_overlay_child(struct gate *mapped, int ready_fd) {
    if (unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0) return 1;
    (void)!write(ready_fd, "u", 1);
    close(ready_fd);
    gate_wait(mapped);
    if (setresgid(0, 0, 0) != 0 || setresuid(0, 0, 0) != 0) return 2;
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) return 3;
    mkdir("/tmp", 01777);
    if (mkdir("/tmp/selfcheck-ovl", 0755) != 0 && errno != EEXIST) return 4;
    if (mount("tmpfs", "/tmp/selfcheck-ovl", "tmpfs", 0, "mode=0755") != 0) return 5;
    const char *dirs[] = {"/tmp/selfcheck-ovl/lower", "/tmp/selfcheck-ovl/upper", "/tmp/selfcheck-ovl/work",
                          "/tmp/selfcheck-ovl/merged"};
    for (int i = 0; i < 4; i++)
        if (mkdir(dirs[i], 0755) != 0) return 6;
    if (write_file("/tmp/selfcheck-ovl/lower/from-lower", "") != 0) {
        int fd = open("/tmp/selfcheck-ovl/lower/from-lower", O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
        if (fd < 0) return 7;
        close(fd);
    }
    if (mount("overlay", "/tmp/selfcheck-ovl/merged", "overlay", 0,
              "lowerdir=/tmp/selfcheck-ovl/lower,upperdir=/tmp/selfcheck-ovl/upper,workdir=/tmp/selfcheck-ovl/work") != 0)
        return 8;
    int fd = open("/tmp/selfcheck-ovl/merged/from-merged", O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
    if (fd < 0) return 9;
    close(fd);
    if (access("/tmp/selfcheck-ovl/upper/from-merged", F_OK) != 0) return 10;
    if (access("/tmp/selfcheck-ovl/lower/from-merged", F_OK) == 0) return 11;
    if (mkdir("/tmp/selfcheck-ovl/merged/old", 0755) != 0) return 12;
    if (syscall(SYS_pivot_root, "/tmp/selfcheck-ovl/merged", "/tmp/selfcheck-ovl/merged/old") != 0) return 13;
    if (chdir("/") != 0) return 14;
    if (umount2("/old", MNT_DETACH) != 0) return 15;
    if (access("/from-lower", F_OK) != 0 || access("/from-merged", F_OK) != 0) return 16;
    if (access("/sys/fs/cgroup", F_OK) == 0) return 17; /* the old root must be gone */
    return 0;
}

static void check_userns_overlay(void) {
    check_started = now();
    static const char *steps[] = {
        "ok", "unshare(CLONE_NEWUSER|CLONE_NEWNS)", "setresuid/setresgid to the mapped root", "make / private",
        "mkdir", "tmpfs mount in the user namespace", "mkdir layers", "create a lower file",
        "overlay mount in the user namespace", "write through the overlay", "write did not land in upper",
        "write leaked into lower", "mkdir put_old", "pivot_root into the overlay", "chdir /",
        "umount the old root", "files missing after pivot_root", "old root still visible",
    };
    struct gate mapped;
    gate_open(&mapped);
    int ready[2];
    if (pipe2(ready, O_CLOEXEC) != 0) { result(0, "userns+overlay", "pipe: %s", strerror(errno)); return; }
    pid_t pid = fork();
    if (pid == 0) {
        close(ready[0]);
        int step = userns_overlay_child(&mapped, ready[1]);
        if (step) fprintf(stderr, "selfcheck: userns+overlay step %d: %s\n", step, strerror(errno));
        _exit(step);
    }
    close(ready[1]);
    char c;
    int unshared = read(ready[0], &c, 1) == 1;
    close(ready[0]);
    /* As Hangar does: the parent maps a range of host ids to 0..65535 in the child's ns. */
    int mapped_ok = 1;
    if (unshared) {
        char path[64];
        snprintf(path, sizeof path, "/proc/%d/uid_map", pid);
        mapped_ok &= write_file(path, "0 100000 65536") == 0;
        snprintf(path, sizeof path, "/proc/%d/gid_map", pid);
        mapped_ok &= write_file(path, "0 100000 65536") == 0;
    }
    int map_errno = errno;
    gate_release(&mapped);
    int status;
    waitpid(pid, &status, 0);
    int step = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    if (!mapped_ok)
        result(0, "userns+overlay", "writing uid_map/gid_map: %s", strerror(map_errno));
    else if (step == 0)
        result(1, "userns+overlay", "uid/gid map 0 100000 65536, tmpfs + overlay mounted in the user namespace, pivot_root into the overlay");
    else
        result(0, "userns+overlay", "failed at: %s (%s)",
               step > 0 && step < (int)(sizeof steps / sizeof *steps) ? steps[step] : "?", describe(status));
}

/* Hangar idmaps its image directory (the overlay's lower layer). Tries an idmapped mount
 * (ids 0..65535 shown as 100000..165535) of `dir`; on success attaches it, and stores the
 * owner that `dir` shows through it in *seen_uid. Returns 0 or an errno. */
static int try_idmap(const char *dir, uid_t *seen_uid) {
    int sync_fd[2];
    if (pipe2(sync_fd, O_CLOEXEC) != 0) return errno;
    pid_t pid = fork();
    if (pid == 0) {
        close(sync_fd[1]);
        if (unshare(CLONE_NEWUSER) != 0) _exit(1);
        char c;
        (void)!read(sync_fd[0], &c, 1); /* hold the namespace until the parent is done */
        _exit(0);
    }
    close(sync_fd[0]);
    usleep(50000); /* let the child unshare */
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/uid_map", pid);
    int rc = write_file(path, "0 100000 65536") == 0 ? 0 : errno;
    snprintf(path, sizeof path, "/proc/%d/gid_map", pid);
    if (!rc) rc = write_file(path, "0 100000 65536") == 0 ? 0 : errno;
    snprintf(path, sizeof path, "/proc/%d/ns/user", pid);
    int userns = rc ? -1 : open(path, O_RDONLY | O_CLOEXEC);
    if (!rc && userns < 0) rc = errno;
    int tree = rc ? -1 : open_tree(AT_FDCWD, dir, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
    if (!rc && tree < 0) rc = errno;
    if (!rc) {
        struct mount_attr attr = {.attr_set = MOUNT_ATTR_IDMAP, .userns_fd = (uint64_t)userns};
        if (mount_setattr(tree, "", AT_EMPTY_PATH, &attr, sizeof attr) != 0) rc = errno;
    }
    if (!rc) {
        const char *view = "/tmp/selfcheck-idmap-view";
        mkdir(view, 0755);
        struct stat st;
        if (move_mount(tree, "", AT_FDCWD, view, MOVE_MOUNT_F_EMPTY_PATH) != 0) rc = errno;
        else if (stat(view, &st) != 0) rc = errno;
        else *seen_uid = st.st_uid;
        umount2(view, MNT_DETACH);
        rmdir(view);
    }
    if (tree >= 0) close(tree);
    if (userns >= 0) close(userns);
    close(sync_fd[1]);
    waitpid(pid, NULL, 0);
    return rc;
}

/* Run for each directory given on the command line (e.g. a --disk mount point). */
static void check_idmap(const char *dir) {
    check_started = now();
    struct stat st;
    struct statfs sf;
    if (stat(dir, &st) != 0 || statfs(dir, &sf) != 0) { result(0, "idmap", "%s: %s", dir, strerror(errno)); return; }
    uid_t seen = (uid_t)-1;
    int rc = try_idmap(dir, &seen);
    if (rc)
        result(0, "idmap", "idmapped mount of %s (fs magic 0x%lx): %s", dir, (long)sf.f_type, strerrorname_np(rc));
    else
        result(seen == st.st_uid + 100000, "idmap", "idmapped mount of %s (fs magic 0x%lx): owner %d shows as %d",
               dir, (long)sf.f_type, st.st_uid, seen);
}

/* Facts about the guest's root filesystem (a tmpfs); not a failure either way. */
static void info_idmap_root(void) {
    mkdir("/tmp/selfcheck-idmap", 0755);
    struct statfs sf;
    statfs("/tmp/selfcheck-idmap", &sf);
    uid_t seen = (uid_t)-1;
    int rc = try_idmap("/tmp/selfcheck-idmap", &seen);
    info("idmapped mount of a directory on the guest's root (fs magic 0x%lx): %s%s", (long)sf.f_type,
         rc ? strerrorname_np(rc) : "works", rc == EINVAL ? " (tmpfs supports idmapped mounts from Linux 6.3 on; use --disk)" : "");
    rmdir("/tmp/selfcheck-idmap");
}

int main(int argc, char **argv) {
    double start = now();
    struct utsname u;
    uname(&u);
    info("kernel %s, pid %d, uid %d", u.release, getpid(), getuid());
    check_cgroup2();
    check_memory_oom();
    check_pids_max();
    check_cpu_max();
    check_cgroup_kill();
    check_clone3();
    check_userns_overlay();
    for (int i = 1; i < argc; i++) check_idmap(argv[i]);
    info_idmap_root();
    printf("selfcheck: %d failed, %.2f s\n", failures, now() - start);
    return failures ? 1 : 0;
}
