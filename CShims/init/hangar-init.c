// hangar-init: PID 1 of every sandbox. Starts the command, forwards termination
// signals to it, reaps every process that is re-parented to it, and exits with the
// command's status (128+N when a signal N ended it). When it exits, the kernel kills
// whatever else is left in the sandbox's pid namespace.
//
// Usage: hangar-init REPORT_FD COMMAND [ARG...]
// REPORT_FD is the supervisor's report pipe: if the command cannot be executed, a
// struct hg_report {step, errno, detail} is written to it; EOF means it was executed.
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
        if (dir_length + name_length + 2 <= sizeof candidate && name_length > 0) {
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

__attribute__((used)) void hangar_init_main(long *stack) {
    long argc = stack[0];
    char **argv = (char **)(stack + 1);
    char **envp = argv + argc + 1;
    if (argc < 3) {
        say("usage: hangar-init REPORT_FD COMMAND [ARG...]\n");
        leave(2);
    }
    // The command runs as the same user: without this it could rewrite our memory
    // through /proc/1/mem (ptrace is refused by seccomp, open and write are not).
    HG_SYS5(__NR_prctl, PR_SET_DUMPABLE, 0, 0, 0, 0);

    long report = 0;
    for (const char *c = argv[1]; *c; c++) {
        if (*c < '0' || *c > '9' || report > 1 << 20) {
            report = -1;
            break;
        }
        report = report * 10 + (*c - '0');
    }
    if (report < 3 || HG_SYS3(__NR_fcntl, report, F_SETFD, FD_CLOEXEC) < 0) {
        // The supervisor would take silence for success: fail loudly instead.
        say("hangar-init: bad report fd\n");
        leave(2);
    }

    uint64_t handled = 1ull << (SIGCHLD - 1);
    for (size_t i = 0; i < sizeof forwarded / sizeof forwarded[0]; i++) handled |= 1ull << (forwarded[i] - 1);
    uint64_t saved = 0;
    long r = HG_SYS4(__NR_rt_sigprocmask, SIG_BLOCK, &handled, &saved, 8);
    if (r < 0) report_and_leave((int)report, HG_STEP_INIT, r, 126);

    long child = HG_SYS5(__NR_clone, SIGCHLD, 0, 0, 0, 0);
    if (child < 0) report_and_leave((int)report, HG_STEP_INIT, child, 126);
    if (child == 0) {
        HG_SYS4(__NR_rt_sigprocmask, SIG_SETMASK, &saved, NULL, 8);
        r = execute(argv + 2, envp);
        report_and_leave((int)report, HG_STEP_EXEC, r, r == -ENOENT ? 127 : 126);
    }
    HG_SYS1(__NR_close, report);

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

// The entry point: hand the initial stack (argc, argv, envp) to hangar_init_main.
#if defined(__x86_64__)
__asm__(".text\n.global _start\n_start:\n xor %rbp, %rbp\n mov %rsp, %rdi\n and $-16, %rsp\n call hangar_init_main\n hlt\n");
#elif defined(__aarch64__)
__asm__(".text\n.global _start\n_start:\n mov x29, #0\n mov x30, #0\n mov x0, sp\n and sp, x0, #-16\n bl hangar_init_main\n brk #0\n");
#else
#error "hangar-init: add this architecture's _start"
#endif
