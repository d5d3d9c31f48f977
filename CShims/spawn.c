// The sandbox spawn: clone(CLONE_VM | CLONE_VFORK | namespaces) and the child's setup up
// to execveat(hangar-init). Between clone and execve the child runs on the parent's
// memory, so it only makes raw system calls on its own stack: no allocation, no locks,
// no errno, no libc state. Every decision was made by the caller (see hangar_shims.h).
#define _GNU_SOURCE
#include "hangar_shims.h"
#include "hg_syscall.h"
#include "hg_worker.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/sched.h>
#include <linux/openat2.h>
#include <linux/seccomp.h>
#include <linux/securebits.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define HG_CHILD_STACK (256 * 1024)
#define HG_MAX_KEEP_FDS 64

/// Shared between the spawning thread, the id-map thread and the child.
struct spawn_ctx {
    const struct hg_spawn_args *args;
    int parent_sock;           // the id-map thread's end of the handshake socketpair
    int child_sock;            // the child's end
    int report_fd;             // write end of the report pipe
    volatile pid_t child_tid;  // written by the kernel (CLONE_PARENT_SETTID)
    const int *host_trees;     // the child's: received trees of hg_spawn_args.host_binds
};

/// Sent by the id-map thread to the child, with the image tree fd on success.
struct handshake {
    int32_t step;
    int32_t error;
    int32_t detail;
};

// ---- clone3 with a stack of ours ------------------------------------------------

/// clone3(args) with CLONE_VM: the child runs fn(arg) on args->stack and exits with its
/// result; the parent gets the child's pid or -errno. glibc has no clone3 wrapper that
/// takes a function, and the child cannot return from the system call on a new stack,
/// hence a few instructions per architecture.
long hg_clone3_vm(struct clone_args *args, size_t size, int (*fn)(void *), void *arg);
#if defined(__x86_64__)
__asm__(".text\n.global hg_clone3_vm\n.type hg_clone3_vm,@function\nhg_clone3_vm:\n"
        " mov %rdx, %r8\n"      // fn and arg survive the system call in the child's copy
        " mov %rcx, %r9\n"
        " mov $435, %eax\n"     // __NR_clone3
        " syscall\n"
        " test %rax, %rax\n"
        " jnz 1f\n"
        " xor %ebp, %ebp\n"     // the child, on its own stack: no frame above
        " mov %r9, %rdi\n"
        " call *%r8\n"
        " mov %eax, %edi\n"
        " mov $60, %eax\n"      // __NR_exit
        " syscall\n"
        " hlt\n"
        "1: ret\n");
#elif defined(__aarch64__)
__asm__(".text\n.global hg_clone3_vm\n.type hg_clone3_vm,%function\nhg_clone3_vm:\n"
        " mov x9, x2\n"
        " mov x10, x3\n"
        " mov x8, #435\n"
        " svc #0\n"
        " cbnz x0, 1f\n"
        " mov x29, #0\n"
        " mov x30, #0\n"
        " mov x0, x10\n"
        " blr x9\n"
        " mov x8, #93\n"
        " svc #0\n"
        " brk #0\n"
        "1: ret\n");
#else
#error "hg_clone3_vm: add this architecture"
#endif

// ---- child -------------------------------------------------------------------

static size_t hg_strlen(const char *s) {
    size_t n = 0;
    while (s[n] != 0) n++;
    return n;
}

/// False once the supervisor is gone: the id-map thread's end of the handshake socket
/// is held by the supervisor until this child has executed.
static int parent_alive(int child_sock) {
    struct pollfd p = {.fd = child_sock, .events = 0, .revents = 0};
    struct timespec now = {0, 0};
    long r = HG_SYS5(__NR_ppoll, &p, 1, &now, NULL, 8);
    return r == 0 || (r > 0 && !(p.revents & (POLLHUP | POLLERR)));
}

__attribute__((noreturn)) static void child_fail(int report_fd, int32_t step, long err, int32_t detail) {
    struct hg_report r = {.step = step, .error = (int32_t)(err < 0 ? -err : err), .detail = detail};
    HG_SYS3(__NR_write, report_fd, &r, sizeof r);
    for (;;) HG_SYS1(__NR_exit_group, 127);
}

/// Open path beneath dirfd as O_PATH. Any symlink on the way, the last component
/// included, fails with ELOOP: a mount point in an image is never followed elsewhere.
static long open_beneath(int dirfd, const char *path, int extra_flags) {
    struct open_how how = {
        .flags = O_PATH | O_CLOEXEC | (uint64_t)extra_flags,
        .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
    };
    return HG_SYS4(__NR_openat2, dirfd, path, &how, sizeof how);
}

enum create_kind { CREATE_DIR, CREATE_FILE, CREATE_SYMLINK };

/// Create the last component of target (a directory, an empty file, or a symlink to
/// link) beneath rootfd; the parent is resolved without following symlinks.
static long create_beneath(int rootfd, const char *target, enum create_kind kind, const char *link) {
    char parent[PATH_MAX];
    size_t len = hg_strlen(target);
    if (len == 0 || len >= sizeof parent) return -ENAMETOOLONG;
    size_t slash = len;
    while (slash > 0 && target[slash - 1] != '/') slash--;
    const char *leaf = target + slash;
    long dirfd;
    if (slash == 0) {
        dirfd = HG_SYS3(__NR_fcntl, rootfd, F_DUPFD_CLOEXEC, 0);
    } else {
        for (size_t i = 0; i + 1 < slash; i++) parent[i] = target[i];
        parent[slash - 1] = 0;
        dirfd = open_beneath(rootfd, parent, O_DIRECTORY);
    }
    if (dirfd < 0) return dirfd;
    long r;
    if (kind == CREATE_DIR) {
        r = HG_SYS3(__NR_mkdirat, dirfd, leaf, 0755);
    } else if (kind == CREATE_FILE) {
        r = HG_SYS4(__NR_openat, dirfd, leaf, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC | O_NOFOLLOW, 0644);
        if (r >= 0) r = HG_SYS1(__NR_close, r);
    } else {
        r = HG_SYS3(__NR_symlinkat, link, dirfd, leaf);
    }
    HG_SYS1(__NR_close, dirfd);
    return r;
}

/// Resolve (and, if asked, create) the target of a mount. Returns an O_PATH fd,
/// -ENOENT for a missing optional target, or another negative errno.
static long mount_target(int rootfd, const struct hg_mount *m) {
    long fd = open_beneath(rootfd, m->target, 0);
    if (fd == -ENOENT && (m->flags & (HG_MOUNT_MKDIR | HG_MOUNT_MKFILE))) {
        long r = create_beneath(rootfd, m->target, (m->flags & HG_MOUNT_MKDIR) ? CREATE_DIR : CREATE_FILE, NULL);
        if (r < 0 && r != -EEXIST) return r;
        fd = open_beneath(rootfd, m->target, 0);
    }
    return fd;
}

static long attach(long treefd, long targetfd) {
    return HG_SYS5(__NR_move_mount, treefd, "", targetfd, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH);
}

static long set_attrs(long treefd, uint64_t attrs, int recursive) {
    if (attrs == 0) return 0;
    struct mount_attr attr = {.attr_set = attrs};
    return HG_SYS5(__NR_mount_setattr, treefd, "", AT_EMPTY_PATH | (recursive ? AT_RECURSIVE : 0), &attr, sizeof attr);
}

static long do_mount(int rootfd, const struct hg_mount *m, const int *host_trees, size_t host_tree_count) {
    if (m->kind == HG_MOUNT_SYMLINK) return create_beneath(rootfd, m->target, CREATE_SYMLINK, m->source);
    long target = mount_target(rootfd, m);
    if (target < 0) return (target == -ENOENT && (m->flags & HG_MOUNT_OPTIONAL)) ? 0 : target;

    long tree = -EINVAL;
    if (m->kind == HG_MOUNT_HOST) {
        // Attached as it came; the parent set its attributes. Closed by the caller.
        long r = m->tree >= 0 && (size_t)m->tree < host_tree_count ? attach(host_trees[m->tree], target) : -EINVAL;
        HG_SYS1(__NR_close, target);
        return r;
    } else if (m->kind == HG_MOUNT_FS) {
        long fs = HG_SYS2(__NR_fsopen, m->source, FSOPEN_CLOEXEC);
        if (fs < 0) {
            tree = fs;
        } else {
            long r = 0;
            for (const char *const *o = m->options; o != NULL && o[0] != NULL && r >= 0; o += 2) {
                r = o[1] != NULL ? HG_SYS5(__NR_fsconfig, fs, FSCONFIG_SET_STRING, o[0], o[1], 0)
                                 : HG_SYS5(__NR_fsconfig, fs, FSCONFIG_SET_FLAG, o[0], NULL, 0);
            }
            if (r >= 0) r = HG_SYS5(__NR_fsconfig, fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0);
            tree = r >= 0 ? HG_SYS3(__NR_fsmount, fs, FSMOUNT_CLOEXEC, m->attrs) : r;
            HG_SYS1(__NR_close, fs);
        }
    } else if (m->kind == HG_MOUNT_BIND || m->kind == HG_MOUNT_REBIND) {
        // BIND clones a host path (only the mount there); REBIND clones the target with
        // everything below it, so that its attributes reach the submounts too.
        int rebind = m->kind == HG_MOUNT_REBIND;
        tree = rebind ? HG_SYS3(__NR_open_tree, target, "",
                                OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH | AT_RECURSIVE)
                      : HG_SYS3(__NR_open_tree, AT_FDCWD, m->source, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
        long r = tree >= 0 ? set_attrs(tree, m->attrs, rebind) : 0;
        if (r < 0) {
            HG_SYS1(__NR_close, tree);
            tree = r;
        }
    }
    long r = tree;
    if (tree >= 0) {
        r = attach(tree, target);
        HG_SYS1(__NR_close, tree);
    }
    HG_SYS1(__NR_close, target);
    return r;
}

/// Move stdio and the declared fds to 0.. and the report and init fds right after
/// them (close-on-exec), then close everything else. *report always names a valid
/// report fd, also when this fails half-way (the high copy until the end).
static long arrange_fds(const struct hg_spawn_args *a, int *report, int *init_fd) {
    int sources[3 + HG_MAX_KEEP_FDS + 2];
    size_t n = 0;
    for (int i = 0; i < 3; i++) sources[n++] = a->stdio[i];
    for (size_t i = 0; i < a->keep_fd_count; i++) sources[n++] = a->keep_fds[i];
    sources[n++] = *report;
    sources[n++] = a->init_fd;
    int base = (int)n + 3;
    for (size_t i = 0; i < n; i++) {
        long high = HG_SYS3(__NR_fcntl, sources[i], F_DUPFD_CLOEXEC, base);
        if (high < 0) return high;
        sources[i] = (int)high;
    }
    *report = sources[n - 2];
    for (size_t i = 0; i < n; i++) {
        int cloexec = i >= n - 2 ? O_CLOEXEC : 0;
        long r = HG_SYS3(__NR_dup3, sources[i], (long)i, cloexec);
        if (r < 0) return r;
    }
    *report = (int)n - 2;
    *init_fd = (int)n - 1;
    return HG_SYS3(__NR_close_range, (unsigned)n, ~0u, 0);
}

/// The privileged half: lock the securebits, empty the bounding set but for `keep`,
/// clear the ambient set. Needs CAP_SETPCAP, so it runs before the switch to the
/// sandbox's user. With nothing kept, raising ambient capabilities is locked off too.
static long drop_bounding_set(int cap_last, uint64_t keep) {
    unsigned long bits = SECBIT_NOROOT | SECBIT_NOROOT_LOCKED | SECBIT_NO_SETUID_FIXUP |
                         SECBIT_NO_SETUID_FIXUP_LOCKED | SECBIT_KEEP_CAPS_LOCKED;
    if (keep == 0) bits |= SECBIT_NO_CAP_AMBIENT_RAISE | SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED;
    long r = HG_SYS5(__NR_prctl, PR_SET_SECUREBITS, bits, 0, 0, 0);
    if (r < 0) return r;
    // Every capability libcap knows, and on until the kernel knows no more.
    for (int cap = 0; cap < 64; cap++) {
        if (keep & (1ull << cap)) continue;
        r = HG_SYS5(__NR_prctl, PR_CAPBSET_DROP, cap, 0, 0, 0);
        if (r == -EINVAL && cap > cap_last) break;
        if (r < 0) return r;
    }
    return HG_SYS5(__NR_prctl, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
}

/// The unprivileged half: the effective, permitted and inheritable sets become `keep`
/// (usually empty), and each kept capability is raised in the ambient set, so that it
/// survives the execs of hangar-init and the command.
static long drop_capabilities(uint64_t keep) {
    struct __user_cap_header_struct header = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
    struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3];
    for (int i = 0; i < _LINUX_CAPABILITY_U32S_3; i++) {
        uint32_t part = (uint32_t)(keep >> (32 * i));
        data[i].effective = part;
        data[i].permitted = part;
        data[i].inheritable = part;
    }
    long r = HG_SYS2(__NR_capset, &header, data);
    for (int cap = 0; r >= 0 && cap < 64; cap++) {
        if (keep & (1ull << cap)) r = HG_SYS5(__NR_prctl, PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, 0, 0);
    }
    return r;
}

/// Landlock (a second layer under the mount flags): writes only beneath the writable
/// paths; abstract unix sockets and signals scoped to the sandbox where the kernel can.
/// Returns 0 where the kernel has no Landlock. Needs no_new_privs.
static long restrict_writes(const struct hg_spawn_args *a, int32_t *failed_index) {
    // Our own layout of struct landlock_ruleset_attr: newer than this libc's headers.
    struct {
        uint64_t handled_access_fs;
        uint64_t handled_access_net;
        uint64_t scoped;
    } attr = {0, 0, 0};
    long abi = HG_SYS3(__NR_landlock_create_ruleset, NULL, 0, 1 /* LANDLOCK_CREATE_RULESET_VERSION */);
    if (abi == -ENOSYS || abi == -EOPNOTSUPP) return 0;
    if (abi < 0) return abi;
    // WRITE_FILE, REMOVE_DIR, REMOVE_FILE, MAKE_CHAR, MAKE_DIR, MAKE_REG, MAKE_SOCK,
    // MAKE_FIFO, MAKE_BLOCK, MAKE_SYM; then REFER (ABI 2) and TRUNCATE (ABI 3).
    attr.handled_access_fs = (1ull << 1) | (0x1ffull << 4);
    if (abi >= 2) attr.handled_access_fs |= 1ull << 13;
    if (abi >= 3) attr.handled_access_fs |= 1ull << 14;
    size_t size = 8;
    if (abi >= 6) {
        attr.scoped = 1 /* ABSTRACT_UNIX_SOCKET */ | 2 /* SIGNAL */;
        size = sizeof attr;
    }
    long ruleset = HG_SYS3(__NR_landlock_create_ruleset, &attr, size, 0);
    if (ruleset < 0) return ruleset;
    long r = 0;
    for (size_t i = 0; r >= 0 && i < a->writable_path_count; i++) {
        long fd = HG_SYS4(__NR_openat, AT_FDCWD, a->writable_paths[i], O_PATH | O_CLOEXEC, 0);
        if (fd < 0) {
            *failed_index = (int32_t)i;
            r = fd;
            break;
        }
        // A file (a read-write file bind) takes only the rights that apply to files.
        struct stat st;
        uint64_t allowed = attr.handled_access_fs;
        if (HG_SYS4(__NR_newfstatat, fd, "", &st, AT_EMPTY_PATH) == 0 && !S_ISDIR(st.st_mode))
            allowed &= (1ull << 1) | (1ull << 14);  // WRITE_FILE, TRUNCATE
        struct __attribute__((packed)) {
            uint64_t allowed_access;
            int32_t parent_fd;
        } beneath = {allowed, (int32_t)fd};
        r = HG_SYS4(__NR_landlock_add_rule, ruleset, 1 /* LANDLOCK_RULE_PATH_BENEATH */, &beneath, 0);
        if (r < 0) *failed_index = (int32_t)i;
        HG_SYS1(__NR_close, fd);
    }
    if (r >= 0) r = HG_SYS2(__NR_landlock_restrict_self, ruleset, 0);
    HG_SYS1(__NR_close, ruleset);
    return r;
}

static int child_main(void *opaque) {
    struct spawn_ctx *ctx = opaque;
    const struct hg_spawn_args *a = ctx->args;
    int report = ctx->report_fd;
    long r;

    // Signal handlers of the parent must not run here: reset every disposition.
    // All signals stay blocked (the parent blocked them before clone) until exec.
    struct {
        void *handler;
        unsigned long flags;
        void *restorer;
        uint64_t mask;
    } dfl = {SIG_DFL, 0, NULL, 0};
    for (int sig = 1; sig < 65; sig++) {
        if (sig == SIGKILL || sig == SIGSTOP) continue;
        r = HG_SYS4(__NR_rt_sigaction, sig, &dfl, NULL, 8);
        if (r < 0 && r != -EINVAL) child_fail(report, HG_STEP_SIGNALS, r, sig);
    }
    // Die with the spawning thread. Every credential change clears this, so it is set
    // again after each; parent_alive() covers the moments in between.
    r = HG_SYS5(__NR_prctl, PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    if (r < 0) child_fail(report, HG_STEP_PDEATHSIG, r, -1);
    // Our copy of the id-map thread's end: closed, so that a hang-up on ours means the
    // supervisor is gone.
    HG_SYS1(__NR_close, ctx->parent_sock);

    // Handshake: the id-map thread writes our maps and sends the idmapped image.
    char hello = 'h';
    r = hg_sys6(__NR_sendto, ctx->child_sock, (long)&hello, 1, MSG_NOSIGNAL, 0, 0);
    if (r < 0) child_fail(report, HG_STEP_HANDSHAKE, r, -1);
    struct handshake hs = {0, 0, -1};
    struct iovec iov = {.iov_base = &hs, .iov_len = sizeof hs};
    union {
        char buf[CMSG_SPACE(sizeof(int) * (2 + HG_MAX_HOST_BINDS))];
        struct cmsghdr align;
    } control;
    struct msghdr msg = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf, .msg_controllen = sizeof control.buf};
    r = HG_SYS3(__NR_recvmsg, ctx->child_sock, &msg, MSG_CMSG_CLOEXEC);
    if (r != (long)sizeof hs) child_fail(report, HG_STEP_HANDSHAKE, r < 0 ? r : -EPROTO, -1);
    if (hs.step != 0) child_fail(report, hs.step, hs.error, hs.detail);
    // The image's tree, the upper layer's file system (on disk), then one per host bind.
    size_t staging_trees = a->staging_device != NULL ? 1 : 0;
    size_t tree_count = 1 + staging_trees + a->host_bind_count;
    struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
    if (cmsg == NULL || cmsg->cmsg_level != SOL_SOCKET || cmsg->cmsg_type != SCM_RIGHTS ||
        cmsg->cmsg_len != CMSG_LEN(sizeof(int) * tree_count) || (msg.msg_flags & MSG_CTRUNC))
        child_fail(report, HG_STEP_HANDSHAKE, -EPROTO, -1);
    int trees[2 + HG_MAX_HOST_BINDS];
    __builtin_memcpy(trees, CMSG_DATA(cmsg), sizeof(int) * tree_count);
    int image_tree = trees[0];
    int staging_tree = staging_trees ? trees[1] : -1;
    ctx->host_trees = trees + 1 + staging_trees;

    // cgroups: join while still holding host credentials, then make the cgroup the
    // root of a new cgroup namespace.
    for (size_t i = 0; i < a->cgroup_fd_count; i++) {
        r = HG_SYS3(__NR_write, a->cgroup_fds[i], "0", 1);
        if (r < 0) child_fail(report, HG_STEP_CGROUP, r, (int32_t)i);
    }
    r = HG_SYS1(__NR_unshare, CLONE_NEWCGROUP);
    if (r < 0) child_fail(report, HG_STEP_CGROUP_NS, r, -1);

    // Become root of the new user namespace: mounts made from here are owned by it.
    r = HG_SYS3(__NR_setresgid, 0, 0, 0);
    if (r >= 0) r = HG_SYS3(__NR_setresuid, 0, 0, 0);
    if (r < 0) child_fail(report, HG_STEP_IDENTITY, r, -1);
    r = HG_SYS5(__NR_prctl, PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    if (r < 0) child_fail(report, HG_STEP_PDEATHSIG, r, -1);

    r = HG_SYS5(__NR_mount, NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL);
    if (r < 0) child_fail(report, HG_STEP_PRIVATE, r, -1);

    // The root: overlay of the idmapped image (read-only) and a tmpfs upper.
    if (staging_tree >= 0) {
        r = HG_SYS5(__NR_move_mount, staging_tree, "", AT_FDCWD, a->staging, MOVE_MOUNT_F_EMPTY_PATH);
        HG_SYS1(__NR_close, staging_tree);
    } else {
        r = HG_SYS5(__NR_mount, "tmpfs", a->staging, "tmpfs", MS_NOSUID | MS_NODEV, a->staging_options);
    }
    if (r < 0) child_fail(report, HG_STEP_STAGING, r, -1);
    const char *dirs[4] = {a->lower_dir, a->upper_dir, a->work_dir, a->root_dir};
    for (int i = 0; i < 4; i++) {
        r = HG_SYS3(__NR_mkdirat, AT_FDCWD, dirs[i], 0755);
        if (r < 0) child_fail(report, HG_STEP_STAGING, r, i);
    }
    r = HG_SYS5(__NR_move_mount, image_tree, "", AT_FDCWD, a->lower_dir, MOVE_MOUNT_F_EMPTY_PATH);
    if (r < 0) child_fail(report, HG_STEP_LOWER, r, -1);
    HG_SYS1(__NR_close, image_tree);
    r = HG_SYS5(__NR_mount, "overlay", a->root_dir, "overlay", MS_NOSUID | MS_NODEV, a->overlay_options);
    if (r < 0) child_fail(report, HG_STEP_OVERLAY, r, -1);
    long rootfd = HG_SYS4(__NR_openat, AT_FDCWD, a->root_dir, O_PATH | O_DIRECTORY | O_CLOEXEC, 0);
    if (rootfd < 0) child_fail(report, HG_STEP_OVERLAY, rootfd, -1);

    // /proc, /dev and the rest, before pivot_root (proc cannot be mounted after it
    // inside a user namespace).
    for (size_t i = 0; i < a->mount_count; i++) {
        r = do_mount((int)rootfd, &a->mounts[i], ctx->host_trees, a->host_bind_count);
        if (r < 0) child_fail(report, HG_STEP_MOUNT, r, (int32_t)i);
    }
    for (size_t i = 0; i < a->host_bind_count; i++) HG_SYS1(__NR_close, ctx->host_trees[i]);
    if (a->readonly_root) {
        r = set_attrs(rootfd, MOUNT_ATTR_RDONLY, 0);
        if (r < 0) child_fail(report, HG_STEP_READONLY_ROOT, r, -1);
    }

    r = HG_SYS1(__NR_fchdir, rootfd);
    if (r >= 0) r = HG_SYS2(__NR_pivot_root, ".", ".");
    if (r >= 0) r = HG_SYS2(__NR_umount2, ".", MNT_DETACH);
    if (r >= 0) r = HG_SYS1(__NR_chdir, "/");
    if (r < 0) child_fail(report, HG_STEP_PIVOT, r, -1);
    HG_SYS1(__NR_close, rootfd);

    if (a->hostname != NULL) {
        r = HG_SYS2(__NR_sethostname, a->hostname, hg_strlen(a->hostname));
        if (r < 0) child_fail(report, HG_STEP_HOSTNAME, r, -1);
    }
    r = HG_SYS0(__NR_setsid);
    if (r < 0) child_fail(report, HG_STEP_SETSID, r, -1);

    // Capabilities: the bounding set while CAP_SETPCAP is still held, then the user
    // switch (NO_SETUID_FIXUP keeps the caps it needs), then everything else.
    r = drop_bounding_set(a->cap_last, a->keep_caps);
    if (r < 0) child_fail(report, HG_STEP_CAPS, r, -1);
    if (a->gid != 0 || a->uid != 0) {
        r = HG_SYS3(__NR_setresgid, a->gid, a->gid, a->gid);
        if (r >= 0) r = HG_SYS3(__NR_setresuid, a->uid, a->uid, a->uid);
        if (r < 0) child_fail(report, HG_STEP_USER, r, -1);
    }
    r = HG_SYS5(__NR_prctl, PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    if (r < 0) child_fail(report, HG_STEP_PDEATHSIG, r, -1);
    if (!parent_alive(ctx->child_sock)) child_fail(report, HG_STEP_PDEATHSIG, -ESRCH, -1);
    if (a->workdir != NULL) {
        r = HG_SYS1(__NR_chdir, a->workdir);
        if (r < 0) child_fail(report, HG_STEP_WORKDIR, r, -1);
    }

    int init_fd = -1;
    r = arrange_fds(a, &report, &init_fd);
    if (r < 0) child_fail(report, HG_STEP_FDS, r, -1);

    HG_SYS1(__NR_umask, a->umask);
    r = drop_capabilities(a->keep_caps);
    if (r < 0) child_fail(report, HG_STEP_CAPS, r, -1);
    r = HG_SYS5(__NR_prctl, PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
    if (r < 0) child_fail(report, HG_STEP_NO_NEW_PRIVS, r, -1);
    if (a->writable_paths != NULL) {
        int32_t index = -1;
        r = restrict_writes(a, &index);
        if (r < 0) child_fail(report, HG_STEP_LANDLOCK, r, index);
    }
    // Resource limits, soft and hard, once only the sandbox's own fds are left and nothing
    // here opens another (a low nofile would refuse the handshake's fds or Landlock's).
    // Raising one above the supervisor's own hard limit needs CAP_SYS_RESOURCE on the
    // host, and fails here with EPERM.
    for (size_t i = 0; i < a->rlimit_count; i++) {
        uint64_t limit[2] = {a->rlimits[i].value, a->rlimits[i].value};
        r = HG_SYS4(__NR_prlimit64, 0, a->rlimits[i].resource, limit, NULL);
        if (r < 0) child_fail(report, HG_STEP_RLIMIT, r, (int32_t)i);
    }

    // hangar-init inherits the report fd (to tell whether the command itself was
    // executed) and starts with no signal blocked. Both before seccomp: a profile
    // cannot take them away.
    r = HG_SYS3(__NR_fcntl, report, F_SETFD, 0);
    if (r < 0) child_fail(report, HG_STEP_FDS, r, -1);
    // hangar-init waits for these with sigtimedwait: blocked from here on, a SIGTERM sent
    // before init is ready stays pending instead of being dropped (init of a pid namespace
    // ignores signals it has no handler for). Everything else is unblocked.
    uint64_t handled = 0;
    const int init_signals[] = {SIGCHLD, SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH};
    for (size_t i = 0; i < sizeof init_signals / sizeof init_signals[0]; i++) handled |= 1ull << (init_signals[i] - 1);
    r = HG_SYS4(__NR_rt_sigprocmask, SIG_SETMASK, &handled, NULL, 8);
    if (r < 0) child_fail(report, HG_STEP_SIGNALS, r, -1);

    const struct sock_filter *filter = a->seccomp_filters;
    for (size_t i = 0; i < a->seccomp_count; i++) {
        struct sock_fprog prog = {.len = a->seccomp_lengths[i], .filter = (struct sock_filter *)filter};
        r = HG_SYS3(__NR_seccomp, SECCOMP_SET_MODE_FILTER, a->seccomp_log ? SECCOMP_FILTER_FLAG_LOG : 0, &prog);
        if (r < 0) child_fail(report, HG_STEP_SECCOMP, r, (int32_t)i);
        filter += a->seccomp_lengths[i];
    }
    r = HG_SYS5(__NR_execveat, init_fd, "", a->argv, a->envp, AT_EMPTY_PATH);
    child_fail(report, HG_STEP_EXEC_INIT, r, -1);
}

// ---- id-map thread -------------------------------------------------------------

static int write_proc_file(pid_t pid, const char *name, const char *text) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/%s", (int)pid, name);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) return -errno;
    size_t len = strlen(text);
    ssize_t n = write(fd, text, len);
    int err = n < 0 ? -errno : (n == (ssize_t)len ? 0 : -EIO);
    close(fd);
    return err;
}

/// The image as a detached, read-only mount whose owners are mapped through the
/// child's user namespace: files owned by host root appear owned by root inside.
/// The child of userns_with_map: it only has to exist while its parent opens its user
/// namespace, and is then killed. It dies with the mapper thread too.
static int hold_userns(void *unused) {
    (void)unused;
    HG_SYS5(__NR_prctl, PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    for (;;) HG_SYS0(__NR_pause);
    return 0;
}

/// A user namespace whose uid and gid maps are `map` ("INSIDE OUTSIDE COUNT"), for idmapped
/// mounts only: a short-lived child (sharing our memory, on a stack of its own) creates it,
/// we write its maps, keep an fd of it, and kill the child. Returns the fd or a negative
/// errno. Only the mapper thread calls it (one at a time: the static stack).
static int userns_with_map(const char *map) {
    static char stack[64 * 1024] __attribute__((aligned(16)));
    struct clone_args ca;
    memset(&ca, 0, sizeof ca);
    ca.flags = CLONE_VM | CLONE_NEWUSER;
    ca.exit_signal = SIGCHLD;
    ca.stack = (uint64_t)(uintptr_t)stack;
    ca.stack_size = sizeof stack;
    // No handler of ours may run on the child's small stack: every signal stays blocked
    // there (it inherits the mask), and here until the clone returned.
    uint64_t all = ~0ull, saved = 0;
    syscall(SYS_rt_sigprocmask, SIG_SETMASK, &all, &saved, 8);
    long pid = hg_clone3_vm(&ca, sizeof ca, hold_userns, NULL);
    syscall(SYS_rt_sigprocmask, SIG_SETMASK, &saved, NULL, 8);
    if (pid < 0) return (int)pid;
    int result = write_proc_file((pid_t)pid, "setgroups", "deny");
    if (result == 0) result = write_proc_file((pid_t)pid, "uid_map", map);
    if (result == 0) result = write_proc_file((pid_t)pid, "gid_map", map);
    if (result == 0) {
        char path[64];
        snprintf(path, sizeof path, "/proc/%ld/ns/user", pid);
        result = open(path, O_RDONLY | O_CLOEXEC);
        if (result < 0) result = -errno;
    }
    kill((pid_t)pid, SIGKILL);
    while (waitpid((pid_t)pid, NULL, __WALL) < 0 && errno == EINTR) {
    }
    return result;
}

/// A new mount of the block device `source` (a file system of `type`), nosuid and
/// nodev, idmapped to the user namespace `userns`: host root's files are the sandbox's.
static int idmapped_filesystem(int userns, const char *type, const char *source, int *tree_out) {
    int fs = (int)syscall(__NR_fsopen, type, FSOPEN_CLOEXEC);
    if (fs < 0) return -errno;
    int err = 0;
    if (syscall(__NR_fsconfig, fs, FSCONFIG_SET_STRING, "source", source, 0) < 0 ||
        syscall(__NR_fsconfig, fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0)
        err = -errno;
    int tree = err == 0 ? (int)syscall(__NR_fsmount, fs, FSMOUNT_CLOEXEC, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV) : -1;
    if (err == 0 && tree < 0) err = -errno;
    close(fs);
    if (err != 0) return err;
    struct mount_attr attr = {.attr_set = MOUNT_ATTR_IDMAP, .userns_fd = (uint64_t)userns};
    if (syscall(__NR_mount_setattr, tree, "", AT_EMPTY_PATH, &attr, sizeof attr) < 0) {
        err = -errno;
        close(tree);
        return err;
    }
    *tree_out = tree;
    return 0;
}

/// A clone of the mount at `dirfd`/`path` (not its submounts), idmapped to the user
/// namespace `userns` and given `attrs`.
static int idmapped_tree(int userns, int dirfd, const char *path, uint64_t attrs, int *tree_out) {
    int flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | (path[0] == 0 ? AT_EMPTY_PATH : 0);
    int tree = (int)syscall(__NR_open_tree, dirfd, path, flags);
    if (tree < 0) return -errno;
    // Private: a clone of a shared host mount would join its peer group, and mounts made
    // below it in the sandbox would propagate to the host (and the host's into it).
    struct mount_attr attr = {
        .attr_set = MOUNT_ATTR_IDMAP | attrs, .userns_fd = (uint64_t)userns, .propagation = MS_PRIVATE};
    if (syscall(__NR_mount_setattr, tree, "", AT_EMPTY_PATH, &attr, sizeof attr) < 0) {
        int err = -errno;
        close(tree);
        return err;
    }
    *tree_out = tree;
    return 0;
}

/// Runs on the id-map thread while the spawning thread is frozen in clone: waits for
/// the child's hello, writes its id maps, and sends it the idmapped image (or the
/// step that failed).
static void map_ids(void *opaque) {
    struct spawn_ctx *ctx = opaque;
    const struct hg_spawn_args *a = ctx->args;
    char hello;
    ssize_t n;
    do {
        n = recv(ctx->parent_sock, &hello, 1, 0);
    } while (n < 0 && errno == EINTR);
    if (n != 1) return;  // the child died before its hello, or clone failed
    pid_t pid = ctx->child_tid;

    struct handshake hs = {0, 0, -1};
    int trees[2 + HG_MAX_HOST_BINDS];
    size_t tree_count = 0;
    int err = write_proc_file(pid, "setgroups", "deny");
    if (err == 0) err = write_proc_file(pid, "uid_map", a->uid_map);
    if (err == 0) err = write_proc_file(pid, "gid_map", a->gid_map);
    if (err != 0) hs = (struct handshake){HG_STEP_ID_MAP, -err, -1};
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/ns/user", (int)pid);
    int userns = hs.step == 0 ? open(path, O_RDONLY | O_CLOEXEC) : -1;
    if (hs.step == 0 && userns < 0) hs = (struct handshake){HG_STEP_IMAGE, errno, -1};
    if (hs.step == 0) {
        err = idmapped_tree(userns, AT_FDCWD, a->image, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
                            &trees[0]);
        if (err != 0) hs = (struct handshake){HG_STEP_IMAGE, -err, -1};
        else tree_count = 1;
    }
    if (hs.step == 0 && a->staging_device != NULL) {
        err = idmapped_filesystem(userns, "ext4", a->staging_device, &trees[tree_count]);
        if (err != 0) hs = (struct handshake){HG_STEP_STAGING, -err, -1};
        else tree_count++;
    }
    int owner_userns = -1;
    for (size_t i = 0; hs.step == 0 && i < a->host_bind_count && i < HG_MAX_HOST_BINDS; i++) {
        if (a->host_binds[i].owned && owner_userns < 0) {
            owner_userns = userns_with_map(a->bind_owner_map);
            if (owner_userns < 0) {
                hs = (struct handshake){HG_STEP_HOST_BIND, -owner_userns, (int32_t)i};
                break;
            }
        }
        err = idmapped_tree(a->host_binds[i].owned ? owner_userns : userns, a->host_binds[i].source_fd, "",
                            a->host_binds[i].attrs, &trees[tree_count]);
        if (err != 0) hs = (struct handshake){HG_STEP_HOST_BIND, -err, (int32_t)i};
        else tree_count++;
    }
    if (owner_userns >= 0) close(owner_userns);
    if (userns >= 0) close(userns);

    struct iovec iov = {.iov_base = &hs, .iov_len = sizeof hs};
    union {
        char buf[CMSG_SPACE(sizeof(int) * (2 + HG_MAX_HOST_BINDS))];
        struct cmsghdr align;
    } control;
    memset(&control, 0, sizeof control);
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
    if (hs.step == 0) {
        msg.msg_control = control.buf;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * tree_count);
        struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
        cmsg->cmsg_level = SOL_SOCKET;
        cmsg->cmsg_type = SCM_RIGHTS;
        cmsg->cmsg_len = CMSG_LEN(sizeof(int) * tree_count);
        memcpy(CMSG_DATA(cmsg), trees, sizeof(int) * tree_count);
    }
    while (sendmsg(ctx->parent_sock, &msg, MSG_NOSIGNAL) < 0 && errno == EINTR) {
    }
    for (size_t i = 0; i < tree_count; i++) close(trees[i]);
}

// ---- the spawning threads --------------------------------------------------------

/// One spawning thread and what it owns. Spawns run on up to HG_SPAWNERS of them at
/// once, each started on first use: a spawn holds its thread until the child has
/// executed init (its whole setup), so one thread would serialize every spawn. A
/// spawning thread never exits: it is the parent of the sandboxes it created, and
/// PR_SET_PDEATHSIG fires when the parent thread ends.
struct spawner {
    struct hg_worker worker;  // calls clone
    struct hg_worker mapper;  // writes the child's id maps while it waits
    void *child_stack;
    int home_netns;  // the thread's own network namespace
    int state;       // 0: not set up yet, 1: ready, < 0: unusable (-errno)
    int taken;       // by a spawn (under spawners_lock)
};

#define HG_SPAWNERS 16

struct spawn_job {
    struct spawner *spawner;
    const struct hg_spawn_args *args;
    struct hg_spawn_result *result;
    int status;
};

static struct spawner spawners[HG_SPAWNERS];
static int spawners_allowed = HG_SPAWNERS;  // how many of them spawns may use
static int spawners_taken, spawners_peak;   // in use now, and the most at once
static pthread_mutex_t spawners_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t spawner_freed = PTHREAD_COND_INITIALIZER;
static pthread_once_t spawners_once = PTHREAD_ONCE_INIT;

static void init_spawners(void) {
    for (int i = 0; i < HG_SPAWNERS; i++) {
        spawners[i] = (struct spawner){.worker = HG_WORKER_INIT, .mapper = HG_WORKER_INIT, .home_netns = -1};
    }
}

static int fail(struct hg_spawn_result *res, int32_t step, int err) {
    res->failure = (struct hg_report){.step = step, .error = err, .detail = -1};
    return -err;
}

/// Reads a failure record the child left before exiting, if any.
static int read_failure(int fd, struct hg_report *out) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, 0) <= 0) return 0;
    ssize_t n = read(fd, out, sizeof *out);
    return n == (ssize_t)sizeof *out && out->step != 0;
}

/// Moves the spawning thread into a mount namespace of its own whose root is a small
/// tmpfs holding only what children need before their pivot_root: /staging (the mount
/// point of their upper tmpfs), the device nodes they bind, and /proc (a fully visible
/// proc is what lets them mount their own inside a user namespace). Each clone then
/// copies these few mounts instead of all of the host's, and no host path is reachable
/// from a child even before its pivot_root. Threads have their own fs_struct after
/// unshare(CLONE_FS), so the rest of the process keeps the host's view.
static int enter_spawn_root(const char *mountpoint) {
    static const char *const devices[] = {"null", "zero", "full", "random", "urandom", "tty"};
    if (unshare(CLONE_FS | CLONE_NEWNS) < 0) return -errno;
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) return -errno;
    if (mount("tmpfs", mountpoint, "tmpfs", MS_NOSUID | MS_NOEXEC, "size=64k,nr_inodes=64,mode=0755") < 0)
        return -errno;
    int root = open(mountpoint, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (root < 0) return -errno;
    int err = 0;
    char path[PATH_MAX];
    if (mkdirat(root, "staging", 0755) < 0 || mkdirat(root, "proc", 0555) < 0 || mkdirat(root, "dev", 0755) < 0)
        err = -errno;
    for (size_t i = 0; err == 0 && i < sizeof devices / sizeof devices[0]; i++) {
        char host[32];
        snprintf(host, sizeof host, "/dev/%s", devices[i]);
        snprintf(path, sizeof path, "%s/dev/%s", mountpoint, devices[i]);
        int fd = open(path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644);
        if (fd < 0 || close(fd) < 0 || mount(host, path, NULL, MS_BIND, NULL) < 0) err = -errno;
    }
    snprintf(path, sizeof path, "%s/proc", mountpoint);
    if (err == 0 && mount("/proc", path, NULL, MS_BIND | MS_REC, NULL) < 0) err = -errno;
    if (err == 0 && (fchdir(root) < 0 || syscall(SYS_pivot_root, ".", ".") < 0 || umount2(".", MNT_DETACH) < 0 ||
                     chdir("/") < 0))
        err = -errno;
    close(root);
    return err;
}

static void nothing(void *unused) { (void)unused; }

static void run_spawn(void *opaque) {
    struct spawn_job *job = opaque;
    struct spawner *s = job->spawner;
    const struct hg_spawn_args *a = job->args;
    struct hg_spawn_result *res = job->result;
    *res = (struct hg_spawn_result){.pid = -1, .pidfd = -1, .report_fd = -1, .netns_fd = -1};

    if (s->state == 0) {
        // Children inherit this thread's credentials: no supplementary groups of the
        // supervisor may reach a sandbox (setgroups is denied inside). The raw call
        // changes this thread only.
        int err = syscall(SYS_setgroups, 0, NULL) < 0 ? -errno : 0;
        // The id-map thread must keep the host's view (it opens the image by its host
        // path): start it before this thread leaves, or it would inherit our new root.
        if (err == 0) err = hg_worker_post(&s->mapper, nothing, NULL);
        if (err == 0) hg_worker_wait(&s->mapper);
        if (err == 0) err = enter_spawn_root(a->spawn_root);
        if (err == 0 && (s->home_netns = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC)) < 0) err = -errno;
        // Half-way there this thread's view is unknown: it is not used again.
        s->state = err < 0 ? err : 1;
    }
    if (s->state < 0) {
        job->status = fail(res, HG_STEP_SPAWN_ROOT, -s->state);
        return;
    }
    if (a->host_bind_count > HG_MAX_HOST_BINDS) {
        job->status = fail(res, HG_STEP_HOST_BIND, E2BIG);
        return;
    }
    if (a->keep_fd_count > HG_MAX_KEEP_FDS) {
        job->status = fail(res, HG_STEP_FDS, E2BIG);
        return;
    }
    if (s->child_stack == NULL) {
        void *stack = mmap(NULL, HG_CHILD_STACK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
        if (stack == MAP_FAILED) {
            job->status = fail(res, HG_STEP_CLONE, errno);
            return;
        }
        s->child_stack = stack;
    }
    int sockets[2], pipe_fds[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sockets) < 0) {
        job->status = fail(res, HG_STEP_CLONE, errno);
        return;
    }
    if (pipe2(pipe_fds, O_CLOEXEC) < 0) {
        int err = errno;
        close(sockets[0]);
        close(sockets[1]);
        job->status = fail(res, HG_STEP_CLONE, err);
        return;
    }
    struct spawn_ctx ctx = {
        .args = a, .parent_sock = sockets[0], .child_sock = sockets[1], .report_fd = pipe_fds[1], .child_tid = 0};

    int posted = hg_worker_post(&s->mapper, map_ids, &ctx);
    if (posted < 0) {
        close(sockets[0]);
        close(sockets[1]);
        close(pipe_fds[0]);
        close(pipe_fds[1]);
        job->status = fail(res, HG_STEP_CLONE, -posted);
        return;
    }
    // The child shares our memory until exec: no handler of ours may run in it, not
    // even glibc's own (which pthread_sigmask leaves unblocked), so the raw call.
    uint64_t all = ~0ull, saved = 0;
    syscall(SYS_rt_sigprocmask, SIG_SETMASK, &all, &saved, 8);
    // The child's credential changes act on the memory map it shares with us, and
    // reset its dumpable flag: put ours back afterwards.
    int dumpable = prctl(PR_GET_DUMPABLE, 0, 0, 0, 0);
    // The cgroup namespace comes after joining the cgroups (in the child); the network
    // namespace is a prepared one that this thread enters and the child inherits.
    int flags = (a->clone_flags & ~(CLONE_NEWCGROUP | CLONE_NEWNET)) | CLONE_NEWUSER | CLONE_VM | CLONE_VFORK |
                CLONE_PARENT_SETTID | SIGCHLD;
    pid_t pid = -1;
    int clone_err = 0;
    // Never the spawning thread's own (the host's) network namespace: a prepared one, or
    // one made here and now (so that spawns in a burst, beyond the prepared few, make
    // theirs side by side instead of waiting for one maker thread).
    int joined = 0;
    if (a->netns_fd >= 0) {
        if (setns(a->netns_fd, CLONE_NEWNET) < 0) clone_err = errno;
        joined = clone_err == 0;
    } else {
        int made = hg_netns_unshare_here();
        joined = 1;  // unshare may have succeeded even if a later step failed
        if (made < 0) clone_err = -made;
        else res->netns_fd = made;
    }
    // Per-thread on Linux: only this thread, and the child it creates, run at nice 19.
    int nice = a->background ? getpriority(PRIO_PROCESS, 0) : 0;
    if (a->background) setpriority(PRIO_PROCESS, 0, 19);
    if (clone_err == 0 && a->cgroup_dirfd >= 0) {
        // cgroup v2: born in its cgroup (CLONE_INTO_CGROUP), never in ours.
        struct clone_args ca;
        memset(&ca, 0, sizeof ca);
        ca.flags = (uint64_t)(flags & ~CSIGNAL) | CLONE_INTO_CGROUP;
        ca.exit_signal = SIGCHLD;
        ca.parent_tid = (uint64_t)(uintptr_t)&ctx.child_tid;
        ca.stack = (uint64_t)(uintptr_t)s->child_stack;
        ca.stack_size = HG_CHILD_STACK;
        ca.cgroup = (uint64_t)a->cgroup_dirfd;
        long r = hg_clone3_vm(&ca, sizeof ca, child_main, &ctx);
        if (r < 0) clone_err = (int)-r;
        else pid = (pid_t)r;
    } else if (clone_err == 0) {
        pid = clone(child_main, (char *)s->child_stack + HG_CHILD_STACK, flags, &ctx, &ctx.child_tid);
        if (pid < 0) clone_err = errno;
    }
    if (a->background) setpriority(PRIO_PROCESS, 0, nice);
    // Going home should not fail for a namespace we came from; if it did, later spawns
    // on this thread would land in this sandbox's namespace: it is not used again.
    if (joined && setns(s->home_netns, CLONE_NEWNET) < 0) s->state = -errno;
    if (dumpable >= 0) prctl(PR_SET_DUMPABLE, dumpable, 0, 0, 0);
    syscall(SYS_rt_sigprocmask, SIG_SETMASK, &saved, NULL, 8);

    // Our copies of the child's ends: after this the id-map thread sees EOF if the
    // child never said hello.
    close(sockets[1]);
    close(pipe_fds[1]);
    hg_worker_wait(&s->mapper);
    close(sockets[0]);

    if (pid < 0) {
        close(pipe_fds[0]);
        job->status = fail(res, HG_STEP_CLONE, clone_err);
        return;
    }
    struct hg_report failure;
    if (read_failure(pipe_fds[0], &failure)) {
        siginfo_t info;
        while (waitid(P_PID, (id_t)pid, &info, WEXITED) < 0 && errno == EINTR) {
        }
        close(pipe_fds[0]);
        res->failure = failure;
        job->status = -failure.error;
        return;
    }
    int pidfd = (int)syscall(__NR_pidfd_open, pid, 0);
    if (pidfd < 0) {
        int err = errno;
        kill(pid, SIGKILL);
        siginfo_t info;
        while (waitid(P_PID, (id_t)pid, &info, WEXITED) < 0 && errno == EINTR) {
        }
        close(pipe_fds[0]);
        job->status = fail(res, HG_STEP_CLONE, err);
        return;
    }
    res->pid = pid;
    res->pidfd = pidfd;
    res->report_fd = pipe_fds[0];
    job->status = 0;
}

/// A free, usable spawning thread (the lowest-numbered, so that the pool grows only
/// under load), waiting for one when all are taken; NULL when none is usable.
static struct spawner *take_spawner(void) {
    pthread_once(&spawners_once, init_spawners);
    pthread_mutex_lock(&spawners_lock);
    struct spawner *found = NULL;
    for (;;) {
        int usable = 0;
        for (int i = 0; i < spawners_allowed && found == NULL; i++) {
            if (spawners[i].state < 0) continue;
            usable = 1;
            if (!spawners[i].taken) found = &spawners[i];
        }
        if (found != NULL || !usable) break;
        pthread_cond_wait(&spawner_freed, &spawners_lock);
    }
    if (found != NULL) {
        found->taken = 1;
        if (++spawners_taken > spawners_peak) spawners_peak = spawners_taken;
    }
    pthread_mutex_unlock(&spawners_lock);
    return found;
}

static void give_back(struct spawner *s) {
    pthread_mutex_lock(&spawners_lock);
    s->taken = 0;
    spawners_taken--;
    pthread_cond_signal(&spawner_freed);
    pthread_mutex_unlock(&spawners_lock);
}

int hg_spawners_max(void) { return HG_SPAWNERS; }

int hg_spawners_peak(int reset) {
    pthread_mutex_lock(&spawners_lock);
    int peak = spawners_peak;
    if (reset) spawners_peak = spawners_taken;
    pthread_mutex_unlock(&spawners_lock);
    return peak;
}

void hg_spawners_limit(int count) {
    pthread_mutex_lock(&spawners_lock);
    spawners_allowed = count < 1 ? 1 : count > HG_SPAWNERS ? HG_SPAWNERS : count;
    pthread_cond_broadcast(&spawner_freed);
    pthread_mutex_unlock(&spawners_lock);
}

int hg_spawn(const struct hg_spawn_args *args, struct hg_spawn_result *result) {
    struct spawner *s = take_spawner();
    if (s == NULL) return fail(result, HG_STEP_SPAWN_ROOT, EIO);
    struct spawn_job job = {.spawner = s, .args = args, .result = result, .status = 0};
    int posted = hg_worker_post(&s->worker, run_spawn, &job);
    if (posted < 0) {
        job.status = fail(result, HG_STEP_CLONE, -posted);
    } else {
        hg_worker_wait(&s->worker);
    }
    give_back(s);
    if (job.status != 0 && result->netns_fd >= 0) {
        close(result->netns_fd);
        result->netns_fd = -1;
    }
    return job.status;
}

