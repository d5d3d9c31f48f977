// Network namespaces made ahead of time. Creating one costs about as much as the rest of
// a spawn, so the runtime keeps a few ready and a spawn joins one instead (the spawning
// thread enters it before clone; the child inherits it). A namespace made here is owned
// by the host's user namespace: root inside a sandbox holds no capability over it and
// cannot reconfigure it. Only loopback exists, and it is up.
#define _GNU_SOURCE
#include "hangar_shims.h"
#include "hg_worker.h"

#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <pthread.h>
#include <sched.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

struct netns_job {
    int result;  // fd or -errno
};

static struct hg_worker maker = HG_WORKER_INIT;
static pthread_mutex_t maker_lock = PTHREAD_MUTEX_INITIALIZER;

static int write_file(const char *path, const char *text) {
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) return -errno;
    ssize_t n = write(fd, text, strlen(text));
    int err = n < 0 ? -errno : 0;
    close(fd);
    return err;
}

static int loopback_up(void) {
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0) return -errno;
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    strcpy(ifr.ifr_name, "lo");
    int err = ioctl(s, SIOCGIFFLAGS, &ifr) < 0 ? -errno : 0;
    if (err == 0) {
        ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
        if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0) err = -errno;
    }
    close(s);
    return err;
}

/// On the maker thread: unshare, configure, keep an fd, and go back home.
static void make_netns(void *opaque) {
    struct netns_job *job = opaque;
    int home = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    if (home < 0) {
        job->result = -errno;
        return;
    }
    int err = unshare(CLONE_NEWNET) < 0 ? -errno : 0;
    int fd = -1;
    if (err == 0) {
        fd = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
        if (fd < 0) err = -errno;
        if (err == 0) err = loopback_up();
        // The sandbox's root has no CAP_NET_BIND_SERVICE here: let it listen on any port.
        if (err == 0) err = write_file("/proc/sys/net/ipv4/ip_unprivileged_port_start", "0");
        if (setns(home, CLONE_NEWNET) < 0 && err == 0) err = -errno;
    }
    close(home);
    if (err != 0 && fd >= 0) close(fd);
    job->result = err != 0 ? err : fd;
}

int hg_netns_create(void) {
    struct netns_job job = {.result = -EINVAL};
    pthread_mutex_lock(&maker_lock);
    int posted = hg_worker_post(&maker, make_netns, &job);
    if (posted == 0) hg_worker_wait(&maker);
    pthread_mutex_unlock(&maker_lock);
    return posted < 0 ? posted : job.result;
}

int hg_socket_in_netns(int netns_fd, int domain, int type, int protocol) {
    int home = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    if (home < 0) return -errno;
    if (setns(netns_fd, CLONE_NEWNET) < 0) {
        int err = errno;
        close(home);
        return -err;
    }
    int fd = socket(domain, type | SOCK_CLOEXEC, protocol);
    int err = fd < 0 ? errno : 0;
    // This thread runs other work next: it must not stay in a sandbox's namespace.
    if (setns(home, CLONE_NEWNET) < 0) abort();
    close(home);
    return fd < 0 ? -err : fd;
}

long hg_splice_one_way(int from, int to, volatile int64_t *last_activity, volatile int *peer_done) {
    int pipefd[2];
    if (pipe2(pipefd, O_CLOEXEC) < 0) return -errno;
    fcntl(pipefd[0], F_SETPIPE_SZ, 1 << 20);
    long total = 0;
    int quiet_seconds = 0;
    for (;;) {
        // Wait for data; once the other direction has finished, a side that stays silent
        // for 60 s (a backend that ignores EOF) no longer holds this thread.
        struct pollfd waiting = {.fd = from, .events = POLLIN};
        int ready = poll(&waiting, 1, 1000);
        if (ready < 0 && errno == EINTR) continue;
        if (ready < 0) break;
        if (ready == 0) {
            if (__atomic_load_n(peer_done, __ATOMIC_RELAXED) && ++quiet_seconds >= 60) break;
            continue;
        }
        quiet_seconds = 0;
        ssize_t in = splice(from, NULL, pipefd[1], NULL, 1 << 20, SPLICE_F_MOVE);
        if (in < 0 && errno == EINTR) continue;
        if (in <= 0) break;
        ssize_t left = in;
        while (left > 0) {
            // No SPLICE_F_MORE here: it would cork the last segment of a response.
            ssize_t out = splice(pipefd[0], NULL, to, NULL, (size_t)left, SPLICE_F_MOVE);
            if (out < 0 && errno == EINTR) continue;
            if (out <= 0) goto done;
            left -= out;
        }
        total += in;
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        __atomic_store_n(last_activity, (int64_t)now.tv_sec * 1000000000 + now.tv_nsec, __ATOMIC_RELAXED);
    }
done:
    close(pipefd[0]);
    close(pipefd[1]);
    // The other side learns that this direction is finished.
    shutdown(to, SHUT_WR);
    __atomic_store_n(peer_done, 1, __ATOMIC_RELAXED);
    return total;
}

int hg_accept_cloexec(int listener) {
    int fd = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
    return fd < 0 ? -errno : fd;
}
