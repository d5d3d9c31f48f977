/*
 * /init of the QEMU harness's initramfs (scripts/qemu/run.sh builds it; this file is
 * compiled with `gcc -static -O2`). PID 1 of a throwaway guest. It:
 *
 *   1. mounts proc, sysfs, devtmpfs, and cgroup2 at /sys/fs/cgroup;
 *   2. loads the kernel modules (files /lib/modules/NN-name.ko, plain .ko, dependencies
 *      first: run.sh names them so) in name order with finit_module;
 *   3. switches root: the initramfs root ("rootfs") can never be pivot_root'ed away, so a
 *      sandbox runtime inside it could not pivot_root either. As busybox switch_root does,
 *      it copies the tree into a fresh tmpfs (deleting each original as it goes, to keep
 *      the memory peak low), moves that tmpfs onto / and chroots into it. It then checks
 *      that pivot_root works from there (child, unshare(CLONE_NEWNS), pivot_root);
 *   3b. mounts the ext4 disks run.sh made for --disk (file /payload/disks, lines
 *      "<device name> <guest path>", e.g. "vda /images"), waiting for each device node;
 *   4. mounts devpts (newinstance) and a tmpfs on /dev/shm, makes /tmp (on the root tmpfs);
 *      enables the cgroup v2 controllers memory, pids, cpu for children of the root group;
 *   5. brings the loopback interface up;
 *   6. runs the payload: argv is read from /payload/argv (NUL-separated strings, argv[0]
 *      is the program's path in the guest; run.sh writes it), with stdin/stdout/stderr on
 *      /dev/console (the serial port), cwd /, a small fixed environment;
 *   7. prints "HANGAR-GUEST-EXIT <status>" (exit code, or 128+signal) and powers off.
 *
 * Lines the host parses (run.sh finds them anywhere in a line: payload output without a
 * final newline may stand in front):
 *   HANGAR-GUEST-START <kernel release> uptime=<s>   just before the payload is started
 *   HANGAR-GUEST-EXIT <status>                         after the payload ended
 *   HANGAR-GUEST-ERROR <message>                       setup failed; no payload was run
 * Anything else on the console is the payload's output or kernel messages.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/time.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#define NEWROOT "/.newroot"

static void say(const char *fmt, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf - 1, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if (n > (int)sizeof buf - 2) n = sizeof buf - 2;
    buf[n++] = '\n';
    /* Unbuffered: the host reads the console as it comes, and we may power off next. */
    (void)!write(STDOUT_FILENO, buf, (size_t)n);
}

static void power_off(void) {
    sync();
    reboot(RB_POWER_OFF);
    /* Should not return; if it does, exiting PID 1 panics the kernel, and panic=-1 with
     * QEMU's -no-reboot ends the VM all the same. */
    _exit(1);
}

/* Setup failed: tell the host why, run nothing, power off. */
static void fail(const char *what) {
    say("HANGAR-GUEST-ERROR %s: %s", what, strerror(errno));
    power_off();
}

static void mount_or_fail(const char *src, const char *dst, const char *type, unsigned long flags,
                          const char *data) {
    mkdir(dst, 0755);
    if (mount(src, dst, type, flags, data) != 0) {
        char what[256];
        snprintf(what, sizeof what, "mount %s on %s", type ? type : src, dst);
        fail(what);
    }
}

/* The kernel opens /dev/console for init only if the initramfs has it; after devtmpfs is
 * mounted it exists for sure, so (re)attach fds 0-2 to it. */
static void attach_console(void) {
    int fd = open("/dev/console", O_RDWR | O_NOCTTY);
    if (fd < 0) return;
    for (int i = 0; i < 3; i++) dup2(fd, i);
    if (fd > 2) close(fd);
}

static int has_suffix(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

static int by_name(const struct dirent **a, const struct dirent **b) {
    return strcmp((*a)->d_name, (*b)->d_name);
}

static void load_modules(void) {
    struct dirent **names;
    int n = scandir("/lib/modules", &names, NULL, by_name);
    if (n < 0) return; /* no modules shipped */
    for (int i = 0; i < n; i++) {
        if (has_suffix(names[i]->d_name, ".ko")) {
            char path[512];
            snprintf(path, sizeof path, "/lib/modules/%s", names[i]->d_name);
            int fd = open(path, O_RDONLY | O_CLOEXEC);
            if (fd < 0 || (syscall(SYS_finit_module, fd, "", 0) != 0 && errno != EEXIST)) {
                say("hangar-guest: warning: loading %s failed: %s", path, strerror(errno));
            }
            if (fd >= 0) close(fd);
        }
        free(names[i]);
    }
    free(names);
}

/* --- switch root ----------------------------------------------------------------------- */

static int copy_file(const char *from, const char *to, const struct stat *st) {
    int in = open(from, O_RDONLY | O_CLOEXEC);
    if (in < 0) return -1;
    int out = open(to, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, st->st_mode & 07777);
    if (out < 0) { close(in); return -1; }
    char buf[1 << 16];
    ssize_t r;
    int rc = 0;
    while ((r = read(in, buf, sizeof buf)) > 0) {
        for (ssize_t off = 0; off < r;) {
            ssize_t w = write(out, buf + off, (size_t)(r - off));
            if (w < 0) { if (errno == EINTR) continue; rc = -1; goto done; }
            off += w;
        }
    }
    if (r < 0) rc = -1;
done:
    close(in);
    close(out);
    return rc;
}

static void copy_meta(const char *to, const struct stat *st) {
    lchown(to, st->st_uid, st->st_gid);
    if (!S_ISLNK(st->st_mode)) chmod(to, st->st_mode & 07777); /* chown clears setuid */
    struct timespec times[2] = {st->st_atim, st->st_mtim};
    utimensat(AT_FDCWD, to, times, AT_SYMLINK_NOFOLLOW);
}

/* Moves the tree at `from` (on the initramfs) to `to` (on the new tmpfs): copies each entry
 * and removes the original. Stays on the initramfs filesystem (skips mount points). */
static int move_tree(const char *from, const char *to, dev_t rootdev) {
    DIR *d = opendir(from);
    if (!d) return -1;
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char src[4096], dst[4096];
        snprintf(src, sizeof src, "%s/%s", strcmp(from, "/") ? from : "", e->d_name);
        snprintf(dst, sizeof dst, "%s/%s", to, e->d_name);
        if (!strcmp(src, NEWROOT)) continue;
        struct stat st;
        if (lstat(src, &st) != 0) { rc = -1; continue; }
        if (st.st_dev != rootdev) {
            /* a mount point (proc, sys, dev): recreated empty, moved over later */
            mkdir(dst, st.st_mode & 07777);
            continue;
        }
        if (S_ISDIR(st.st_mode)) {
            if (mkdir(dst, 0700) != 0 && errno != EEXIST) { rc = -1; continue; }
            if (move_tree(src, dst, rootdev) != 0) rc = -1;
            copy_meta(dst, &st);
            rmdir(src);
        } else if (S_ISREG(st.st_mode)) {
            if (copy_file(src, dst, &st) != 0) { say("hangar-guest: copy %s: %s", src, strerror(errno)); rc = -1; continue; }
            copy_meta(dst, &st);
            unlink(src);
        } else if (S_ISLNK(st.st_mode)) {
            char target[4096];
            ssize_t n = readlink(src, target, sizeof target - 1);
            if (n < 0) { rc = -1; continue; }
            target[n] = 0;
            if (symlink(target, dst) != 0) { rc = -1; continue; }
            copy_meta(dst, &st);
            unlink(src);
        } else {
            /* device nodes, fifos, sockets */
            if (mknod(dst, st.st_mode, st.st_rdev) != 0) { rc = -1; continue; }
            copy_meta(dst, &st);
            unlink(src);
        }
    }
    closedir(d);
    return rc;
}

static void switch_root(void) {
    struct stat rootst;
    if (stat("/", &rootst) != 0) fail("stat /");
    mount_or_fail("tmpfs", NEWROOT, "tmpfs", MS_NOSUID, "mode=0755");
    if (move_tree("/", NEWROOT, rootst.st_dev) != 0) {
        errno = EIO;
        fail("copying the initramfs into the new root");
    }
    /* Carry the API filesystems over (cgroup2 moves with /sys, it is mounted below it). */
    const char *api[] = {"/dev", "/proc", "/sys"};
    for (size_t i = 0; i < sizeof api / sizeof *api; i++) {
        char dst[64];
        snprintf(dst, sizeof dst, NEWROOT "%s", api[i]);
        mkdir(dst, 0755);
        if (mount(api[i], dst, NULL, MS_MOVE, NULL) != 0) fail("moving an API filesystem into the new root");
    }
    /* busybox switch_root: chdir into the new root, move it over /, chroot into it. */
    if (chdir(NEWROOT) != 0) fail("chdir " NEWROOT);
    if (mount(".", "/", NULL, MS_MOVE, NULL) != 0) fail("mount --move " NEWROOT " /");
    if (chroot(".") != 0) fail("chroot");
    if (chdir("/") != 0) fail("chdir /");
}

/* The reason for switch_root: pivot_root must work for programs in the guest. */
static void check_pivot_root(void) {
    pid_t pid = fork();
    if (pid < 0) fail("fork");
    if (pid == 0) {
        if (unshare(CLONE_NEWNS) != 0) _exit(10);
        if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) _exit(11);
        mkdir("/tmp", 01777);
        mkdir("/tmp/.pivot-check", 0700);
        if (mount("tmpfs", "/tmp/.pivot-check", "tmpfs", 0, NULL) != 0) _exit(12);
        mkdir("/tmp/.pivot-check/old", 0700);
        if (syscall(SYS_pivot_root, "/tmp/.pivot-check", "/tmp/.pivot-check/old") != 0) _exit(13);
        if (chdir("/") != 0 || umount2("/old", MNT_DETACH) != 0) _exit(14);
        _exit(0);
    }
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    rmdir("/tmp/.pivot-check");
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        /* steps: 10 unshare, 11 make / private, 12 tmpfs, 13 pivot_root, 14 umount old */
        say("HANGAR-GUEST-ERROR pivot_root check failed in the switched root (step %d)",
            WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status));
        power_off();
    }
}

/* --- disks (--disk) ------------------------------------------------------------------- */

static void mkdir_p(const char *path) {
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p == '/') { *p = 0; mkdir(buf, 0755); *p = '/'; }
    }
    mkdir(buf, 0755);
}

/* Disks are ext4 (which, unlike tmpfs before Linux 6.3, supports idmapped mounts). The
 * virtio block driver probes asynchronously: wait up to 10 s for each device node. */
static void mount_disks(void) {
    FILE *f = fopen("/payload/disks", "re");
    if (!f) return;
    char dev[64], path[4000];
    while (fscanf(f, "%63s %3999s", dev, path) == 2) {
        char node[80];
        snprintf(node, sizeof node, "/dev/%s", dev);
        for (int i = 0; i < 1000 && access(node, F_OK) != 0; i++) usleep(10000);
        mkdir_p(path);
        if (mount(node, path, "ext4", 0, NULL) != 0) {
            char what[4200];
            snprintf(what, sizeof what, "mount %s (ext4) on %s", node, path);
            fail(what);
        }
    }
    fclose(f);
}

/* --- cgroup, network ----------------------------------------------------------------- */

static void enable_controllers(void) {
    const char *wanted[] = {"memory", "pids", "cpu"};
    for (size_t i = 0; i < sizeof wanted / sizeof *wanted; i++) {
        /* one at a time, so one missing controller does not hide the others */
        int fd = open("/sys/fs/cgroup/cgroup.subtree_control", O_WRONLY | O_CLOEXEC);
        char buf[32];
        int n = snprintf(buf, sizeof buf, "+%s", wanted[i]);
        if (fd < 0 || write(fd, buf, (size_t)n) != n)
            say("hangar-guest: warning: enabling cgroup controller %s: %s", wanted[i], strerror(errno));
        if (fd >= 0) close(fd);
    }
}

static void loopback_up(void) {
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0) return;
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    strcpy(ifr.ifr_name, "lo");
    if (ioctl(s, SIOCGIFFLAGS, &ifr) == 0) {
        ifr.ifr_flags |= IFF_UP;
        if (ioctl(s, SIOCSIFFLAGS, &ifr) != 0) say("hangar-guest: warning: lo up: %s", strerror(errno));
    }
    close(s);
}

/* --- payload ------------------------------------------------------------------------- */

static char **read_argv(const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) fail("open /payload/argv");
    static char buf[1 << 16];
    size_t len = 0;
    ssize_t r;
    while (len < sizeof buf - 1 && (r = read(fd, buf + len, sizeof buf - 1 - len)) > 0) len += (size_t)r;
    close(fd);
    if (len == sizeof buf - 1) { errno = E2BIG; fail("/payload/argv holds more than 64 KiB"); }
    if (len == 0) { errno = EINVAL; fail("/payload/argv is empty"); }
    if (buf[len - 1] != 0) buf[len++] = 0;
    size_t count = 0;
    for (size_t i = 0; i < len; i++) count += buf[i] == 0;
    char **argv = calloc(count + 1, sizeof *argv);
    if (!argv) fail("calloc");
    size_t k = 0;
    for (size_t i = 0; i < len; i += strlen(buf + i) + 1) argv[k++] = buf + i;
    return argv;
}

static double uptime(void) {
    FILE *f = fopen("/proc/uptime", "r");
    double up = -1;
    if (f) { if (fscanf(f, "%lf", &up) != 1) up = -1; fclose(f); }
    return up;
}

int main(void) {
    mount_or_fail("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    mount_or_fail("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    mount_or_fail("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755");
    attach_console();
    mount_or_fail("cgroup2", "/sys/fs/cgroup", "cgroup2", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    load_modules();
    switch_root();
    check_pivot_root();
    mount_disks();
    /* Commonly expected; sandboxes mount their own, these are for the payload itself. */
    mkdir("/tmp", 01777);
    chmod("/tmp", 01777);
    mount_or_fail("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620");
    mount_or_fail("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");
    enable_controllers();
    loopback_up();

    char **argv = read_argv("/payload/argv");
    struct utsname u;
    uname(&u);
    say("HANGAR-GUEST-START %s uptime=%.2f", u.release, uptime());

    pid_t pid = fork();
    if (pid < 0) fail("fork");
    if (pid == 0) {
        char *envp[] = {"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                        "HOME=/root", "TERM=dumb", "HANGAR_QEMU_GUEST=1", NULL};
        setsid();
        execve(argv[0], argv, envp);
        fprintf(stderr, "hangar-guest: exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    /* PID 1 reaps every orphan; the payload's own status is the one that counts. */
    int status = 0;
    for (;;) {
        int st;
        pid_t p = wait(&st);
        if (p == pid) { status = st; break; }
        if (p < 0 && errno != EINTR) { status = 255 << 8; break; }
    }
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    kill(-1, SIGKILL); /* leftovers of the payload */
    say("HANGAR-GUEST-EXIT %d", code);
    power_off();
    return 0;
}
