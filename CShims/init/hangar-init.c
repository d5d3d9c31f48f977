// hangar-init: PID 1 of every sandbox. Starts the command, forwards termination
// signals to it, reaps every process that is re-parented to it, and exits with the
// command's status (128+N when a signal N ended it). When it exits, the kernel kills
// whatever else is left in the sandbox's pid namespace.
//
// Usage: hangar-init REPORT_FD COMMAND [ARG...]
// REPORT_FD is the supervisor's report pipe: if the command cannot be executed, a
// struct hg_report {step, errno, detail} is written to it; EOF means it was executed.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

enum { STEP_EXEC = 27, STEP_INIT = 28 };  // enum hg_step in hangar_shims.h

struct report {
    int32_t step;
    int32_t error;
    int32_t detail;
};
_Static_assert(sizeof(struct report) == 12, "mirrors struct hg_report");

static const int forwarded[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH};

static void report_and_exit(int fd, int32_t step, int err, int status) {
    struct report r = {step, err, -1};
    if (fd >= 0) {
        ssize_t ignored = write(fd, &r, sizeof r);
        (void)ignored;
    }
    _exit(status);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        static const char usage[] = "usage: hangar-init REPORT_FD COMMAND [ARG...]\n";
        ssize_t ignored = write(2, usage, sizeof usage - 1);
        (void)ignored;
        return 2;
    }
    // The command runs as the same user: without this it could rewrite our memory
    // through /proc/1/mem (ptrace is refused by seccomp, open and write are not).
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    char *end = NULL;
    long report = strtol(argv[1], &end, 10);
    if (end == argv[1] || *end != 0 || report < 3 || report > 1 << 20) report = -1;
    if (report < 0 || fcntl((int)report, F_SETFD, FD_CLOEXEC) < 0) {
        // The supervisor would take silence for success: fail loudly instead.
        static const char bad[] = "hangar-init: bad report fd\n";
        ssize_t ignored = write(2, bad, sizeof bad - 1);
        (void)ignored;
        return 2;
    }

    sigset_t handled;
    sigemptyset(&handled);
    sigaddset(&handled, SIGCHLD);
    for (size_t i = 0; i < sizeof forwarded / sizeof forwarded[0]; i++) sigaddset(&handled, forwarded[i]);
    sigset_t saved;
    if (sigprocmask(SIG_BLOCK, &handled, &saved) < 0) report_and_exit((int)report, STEP_INIT, errno, 126);

    pid_t child = fork();
    if (child < 0) report_and_exit((int)report, STEP_INIT, errno, 126);
    if (child == 0) {
        sigprocmask(SIG_SETMASK, &saved, NULL);
        execvp(argv[2], argv + 2);
        int err = errno;
        report_and_exit((int)report, STEP_EXEC, err, err == ENOENT ? 127 : 126);
    }
    close((int)report);

    for (;;) {
        siginfo_t info;
        int sig = sigwaitinfo(&handled, &info);
        if (sig < 0) continue;
        if (sig != SIGCHLD) {
            kill(child, sig);
            continue;
        }
        // Reaping every child is init's job: orphans of the sandbox are re-parented here.
        for (;;) {
            siginfo_t done;
            memset(&done, 0, sizeof done);
            if (waitid(P_ALL, 0, &done, WEXITED | WNOHANG) < 0 || done.si_pid == 0) break;
            if (done.si_pid != child) continue;
            if (done.si_code == CLD_EXITED) _exit(done.si_status);
            _exit(128 + done.si_status);
        }
    }
}
