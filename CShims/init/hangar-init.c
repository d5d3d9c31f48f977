// hangar-init: PID 1 of every sandbox. Starts the command, forwards termination
// signals to it, reaps every process that is re-parented to it, and exits with the
// command's status (128+N when a signal N ended it). When it exits, the kernel kills
// whatever else is left in the sandbox's pid namespace.
//
// Usage:
//   hangar-init run REPORT_FD COMMAND [ARG...]
//   hangar-init standby READY_FD CONTROL_FD
// REPORT_FD is the supervisor's report pipe: if the command cannot be executed, a
// struct hg_report {step, errno, detail} is written to it; EOF means it was executed.
// In standby the sandbox is complete but has no command yet (a prepared sandbox):
// closing READY_FD says so, and the command, its environment, working directory,
// fds and report pipe arrive later as one struct hg_handoff on CONTROL_FD.
//
// It is freestanding: its own _start and raw system calls, no libc. A static glibc
// program spends most of its start-up probing the CPU (cpuid), which costs a VM exit
// each time; hangar-init starts in every spawn, so it does without.
#include "../hg_syscall.h"
#include "../include/hangar_shims.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/prctl.h>
#include <linux/wait.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <linux/close_range.h>

/// The kernel's siginfo, as much as init reads of it (128 bytes in all).
struct info {
    int32_t signo;
    int32_t error;
    int32_t code;
    int32_t pad;
    int32_t pid;
    uint32_t uid;
    int32_t status;
    int32_t rest[25];
};
_Static_assert(sizeof(struct info) == 128, "the kernel's siginfo_t");

static const int forwarded[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH};
static const char default_path[] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

__attribute__((noreturn)) static void leave(int status) {
    for (;;) HG_SYS1(__NR_exit_group, status);
}

static size_t length(const char *s) {
    size_t n = 0;
    while (s[n] != 0) n++;
    return n;
}

static void say(const char *text) { HG_SYS3(__NR_write, 2, text, length(text)); }

__attribute__((noreturn)) static void report_and_leave(int fd, int32_t step, long err, int status) {
    struct hg_report r = {step, (int32_t)(err < 0 ? -err : err), -1};
    HG_SYS3(__NR_write, fd, &r, sizeof r);
    leave(status);
}

/// execvp's search: a name with a '/' is executed as it is, others are looked up in
/// PATH. The most telling error wins: EACCES over ENOENT, as a shell reports it.
static long execute(char **argv, char **envp) {
    const char *name = argv[0];
    for (const char *c = name; *c; c++) {
        if (*c == '/') return HG_SYS3(__NR_execve, name, argv, envp);
    }
    const char *path = default_path;
    for (char **e = envp; *e; e++) {
        const char *v = *e;
        if (v[0] == 'P' && v[1] == 'A' && v[2] == 'T' && v[3] == 'H' && v[4] == '=') path = v + 5;
    }
    size_t name_length = length(name);
    long best = -ENOENT;
    char candidate[4096];
    for (const char *dir = path;;) {
        const char *end = dir;
        while (*end && *end != ':') end++;
        size_t dir_length = (size_t)(end - dir);
        if (dir_length + name_length + 3 <= sizeof candidate && name_length > 0) {
            size_t n = 0;
            for (size_t i = 0; i < dir_length; i++) candidate[n++] = dir[i];
            if (dir_length == 0) candidate[n++] = '.';
            candidate[n++] = '/';
            for (size_t i = 0; i <= name_length; i++) candidate[n++] = name[i];
            long r = HG_SYS3(__NR_execve, candidate, argv, envp);
            if (r == -EACCES) best = r;
            else if (r != -ENOENT && r != -ENOTDIR && best != -EACCES) best = r;
        }
        if (*end == 0) break;
        dir = end + 1;
    }
    return best;
}

/// A decimal fd number of at least 3, or -1.
static long parse_fd(const char *text) {
    long fd = 0;
    if (*text == 0) return -1;
    for (const char *c = text; *c; c++) {
        if (*c < '0' || *c > '9' || fd > 1 << 20) return -1;
        fd = fd * 10 + (*c - '0');
    }
    return fd >= 3 ? fd : -1;
}

/// What the command is started with.
struct command {
    char **argv;
    char **envp;
    const char *workdir;   // NULL: stay where init is
    const int *fds;        // NULL: keep init's 0, 1, 2 (run); else they become 0, 1, ...
    long fd_count;
    long report;
};

/// The hand-off is read into static memory: init never allocates.
static char handoff[sizeof(struct hg_handoff) + HG_HANDOFF_MAX_BYTES];
static char *strings[HG_HANDOFF_MAX_STRINGS + 2];

/// Waits for the hand-off on control and lays it out as a command. Exits quietly when
/// the supervisor closes the control socket instead (the prepared sandbox is dropped).
static void await_handoff(long control, struct command *out) {
    static int fds[HG_HANDOFF_MAX_FDS];
    union {
        struct cmsghdr header;
        char space[CMSG_SPACE(sizeof fds)];
    } control_data;
    struct iovec iov = {handoff, sizeof handoff};
    struct msghdr message;  // field by field: an initializer would need memset
    message.msg_name = 0;
    message.msg_namelen = 0;
    message.msg_flags = 0;
    message.msg_iov = &iov;
    message.msg_iovlen = 1;
    message.msg_control = control_data.space;
    message.msg_controllen = sizeof control_data.space;
    long n;
    do n = HG_SYS3(__NR_recvmsg, control, &message, MSG_CMSG_CLOEXEC);
    while (n == -EINTR);
    if (n <= 0) leave(n == 0 ? 0 : 2);
    HG_SYS1(__NR_close, control);

    long fd_count = 0;
    struct cmsghdr *c = CMSG_FIRSTHDR(&message);
    if (c && c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS && c->cmsg_len >= CMSG_LEN(0)) {
        fd_count = (long)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        const int *received = (const int *)CMSG_DATA(c);
        for (long i = 0; i < fd_count; i++) fds[i] = received[i];
    }
    // Without its report pipe the supervisor learns of a bad hand-off from the exit status.
    if (fd_count < 4) leave(125);
    long report = fds[fd_count - 1];
    const struct hg_handoff *h = (const struct hg_handoff *)handoff;
    if ((message.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) || n < (long)sizeof *h || h->magic != HG_HANDOFF_MAGIC ||
        h->length != (uint64_t)n - sizeof *h || h->fd_count != (uint64_t)fd_count || h->argc < 1 ||
        (uint64_t)h->argc + h->envc + 1 > HG_HANDOFF_MAX_STRINGS) {
        report_and_leave((int)report, HG_STEP_INIT, -EPROTO, 125);
    }
    // The strings, each NUL-terminated inside the message: workdir, argv..., envp...
    char *text = handoff + sizeof *h;
    char *end = text + h->length;
    long count = 1 + (long)h->argc + (long)h->envc;
    for (long i = 0; i < count; i++) {
        char *s = text;
        while (s < end && *s) s++;
        if (s == end) report_and_leave((int)report, HG_STEP_INIT, -EPROTO, 125);
        strings[i + (i > (long)h->argc ? 1 : 0)] = text;
        text = s + 1;
    }
    strings[1 + h->argc] = 0;  // argv's end; envp follows it
    strings[count + 1] = 0;
    struct hg_report accepted = {HG_STEP_NONE, 0, -1};
    HG_SYS3(__NR_write, report, &accepted, sizeof accepted);
    out->workdir = strings[0];
    out->argv = strings + 1;
    out->envp = strings + 2 + h->argc;
    out->fds = fds;
    out->fd_count = fd_count - 1;
    out->report = report;
}

/// In the command's process: its fds 0, 1, ... from command->fds (everything else is
/// close-on-exec, the report pipe included). Returns 0 or a negative errno.
static long arrange_fds(const struct command *command) {
    long base = command->fd_count + 3;
    static int high[HG_HANDOFF_MAX_FDS];
    for (long i = 0; i < command->fd_count; i++) {
        long fd = HG_SYS3(__NR_fcntl, command->fds[i], F_DUPFD_CLOEXEC, base);
        if (fd < 0) return fd;
        high[i] = (int)fd;
    }
    for (long i = 0; i < command->fd_count; i++) {
        long r = HG_SYS3(__NR_dup3, high[i], i, 0);
        if (r < 0) return r;
    }
    return HG_SYS3(__NR_close_range, (unsigned long)command->fd_count, ~0u, CLOSE_RANGE_CLOEXEC);
}

/// Starts the command as init's only child, then forwards signals and reaps until it
/// ends; exits with its status.
__attribute__((noreturn)) static void supervise(const struct command *command) {
    uint64_t handled = 1ull << (SIGCHLD - 1);
    for (size_t i = 0; i < sizeof forwarded / sizeof forwarded[0]; i++) handled |= 1ull << (forwarded[i] - 1);
    uint64_t unblocked = 0;
    long r = HG_SYS4(__NR_rt_sigprocmask, SIG_SETMASK, &handled, NULL, 8);
    if (r < 0) report_and_leave((int)command->report, HG_STEP_INIT, r, 126);

    long child = HG_SYS5(__NR_clone, SIGCHLD, 0, 0, 0, 0);
    if (child < 0) report_and_leave((int)command->report, HG_STEP_INIT, child, 126);
    if (child == 0) {
        HG_SYS4(__NR_rt_sigprocmask, SIG_SETMASK, &unblocked, NULL, 8);
        if (command->workdir) {
            r = HG_SYS1(__NR_chdir, command->workdir);
            if (r < 0) report_and_leave((int)command->report, HG_STEP_WORKDIR, r, 126);
        }
        if (command->fds) {
            r = arrange_fds(command);
            if (r < 0) report_and_leave((int)command->report, HG_STEP_FDS, r, 126);
        }
        r = execute(command->argv, command->envp);
        report_and_leave((int)command->report, HG_STEP_EXEC, r, r == -ENOENT ? 127 : 126);
    }
    HG_SYS1(__NR_close, command->report);
    if (command->fds) {
        for (long i = 0; i < command->fd_count; i++) HG_SYS1(__NR_close, command->fds[i]);
    }

    for (;;) {
        struct info info;
        long sig = HG_SYS4(__NR_rt_sigtimedwait, &handled, &info, NULL, 8);
        if (sig < 0) continue;
        if (sig != SIGCHLD) {
            HG_SYS2(__NR_kill, child, sig);
            continue;
        }
        // Reaping every child is init's job: orphans of the sandbox are re-parented here.
        for (;;) {
            struct info done;
            done.pid = 0;
            if (HG_SYS5(__NR_waitid, P_ALL, 0, &done, WEXITED | WNOHANG, NULL) < 0 || done.pid == 0) break;
            if (done.pid != child) continue;
            leave(done.code == CLD_EXITED ? done.status : 128 + done.status);
        }
    }
}

static int same(const char *a, const char *b) {
    while (*a && *a == *b) a++, b++;
    return *a == *b;
}

__attribute__((used)) void hangar_init_main(long *stack) {
    long argc = stack[0];
    char **argv = (char **)(stack + 1);
    char **envp = argv + argc + 1;
    // The command runs as the same user: without this it could rewrite our memory
    // through /proc/1/mem (ptrace is refused by seccomp, open and write are not).
    HG_SYS5(__NR_prctl, PR_SET_DUMPABLE, 0, 0, 0, 0);

    long first = argc >= 3 ? parse_fd(argv[2]) : -1;
    if (argc >= 4 && same(argv[1], "run") && first >= 0 &&
        HG_SYS3(__NR_fcntl, first, F_SETFD, FD_CLOEXEC) >= 0) {
        struct command command = {argv + 3, envp, 0, 0, 0, first};
        supervise(&command);
    }
    long control = argc == 4 ? parse_fd(argv[3]) : -1;
    if (control >= 0 && first >= 0 && same(argv[1], "standby")) {
        // Signals stay blocked while waiting: a prepared sandbox is dropped with SIGKILL.
        uint64_t all = ~0ull;
        HG_SYS4(__NR_rt_sigprocmask, SIG_SETMASK, &all, NULL, 8);
        HG_SYS1(__NR_close, first);  // ready
        struct command command;
        await_handoff(control, &command);
        supervise(&command);
    }
    // The supervisor would take silence for success: fail loudly instead.
    say("usage: hangar-init run REPORT_FD COMMAND [ARG...] | hangar-init standby READY_FD CONTROL_FD\n");
    leave(2);
}

// The entry point: hand the initial stack (argc, argv, envp) to hangar_init_main.
#if defined(__x86_64__)
__asm__(".text\n.global _start\n_start:\n xor %rbp, %rbp\n mov %rsp, %rdi\n and $-16, %rsp\n call hangar_init_main\n hlt\n");
#elif defined(__aarch64__)
__asm__(".text\n.global _start\n_start:\n mov x29, #0\n mov x30, #0\n mov x0, sp\n and sp, x0, #-16\n bl hangar_init_main\n brk #0\n");
#else
#error "hangar-init: add this architecture's _start"
#endif
