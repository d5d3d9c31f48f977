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

int hg_netns_unshare_here(void) {
    if (unshare(CLONE_NEWNET) < 0) return -errno;
    int fd = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -errno;
    int err = loopback_up();
    // The sandbox's root has no CAP_NET_BIND_SERVICE here: let it listen on any port.
    if (err == 0) err = write_file("/proc/sys/net/ipv4/ip_unprivileged_port_start", "0");
    if (err != 0) {
        close(fd);
        return err;
    }
    return fd;
}

/// On the maker thread: a new namespace, an fd of it, and back home.
static void make_netns(void *opaque) {
    struct netns_job *job = opaque;
    int home = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    if (home < 0) {
        job->result = -errno;
        return;
    }
    int fd = hg_netns_unshare_here();
    if (setns(home, CLONE_NEWNET) < 0) {
        // Left in the new namespace: this thread makes no more of them.
        if (fd >= 0) close(fd);
        fd = -errno;
        hg_worker_retire(&maker);
    }
    close(home);
    job->result = fd;
}

int hg_netns_create(void) {
    struct netns_job job = {.result = -EINVAL};
    pthread_mutex_lock(&maker_lock);
    int posted = hg_worker_post(&maker, make_netns, &job);
    if (posted == 0) hg_worker_wait(&maker);
    pthread_mutex_unlock(&maker_lock);
    return posted < 0 ? posted : job.result;
}

// Sockets inside a sandbox's namespace are made on a thread of their own: a socket
// belongs to the namespace of the thread that creates it, and the thread must go back
// home afterwards. Should going back ever fail, that thread ends instead of carrying the
// sandbox's namespace into other work. Only the socket call happens there; connecting
// works from any thread.
struct socket_job {
    int netns_fd, domain, type, protocol;
    int result;  // fd or -errno
};

static struct hg_worker socket_maker = HG_WORKER_INIT;
static pthread_mutex_t socket_lock = PTHREAD_MUTEX_INITIALIZER;
static __thread int socket_maker_home = -1;

static void make_socket(void *opaque) {
    struct socket_job *job = opaque;
    if (socket_maker_home < 0 && (socket_maker_home = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC)) < 0) {
        job->result = -errno;
        return;
    }
    if (setns(job->netns_fd, CLONE_NEWNET) < 0) {
        job->result = -errno;
        return;
    }
    int fd = socket(job->domain, job->type | SOCK_CLOEXEC, job->protocol);
    job->result = fd < 0 ? -errno : fd;
    if (setns(socket_maker_home, CLONE_NEWNET) < 0) {
        close(socket_maker_home);
        socket_maker_home = -1;
        hg_worker_retire(&socket_maker);
    }
}

int hg_socket_in_netns(int netns_fd, int domain, int type, int protocol) {
    struct socket_job job = {.netns_fd = netns_fd, .domain = domain, .type = type, .protocol = protocol, .result = -EINVAL};
    pthread_mutex_lock(&socket_lock);
    int posted = hg_worker_post(&socket_maker, make_socket, &job);
    if (posted == 0) hg_worker_wait(&socket_maker);
    pthread_mutex_unlock(&socket_lock);
    return posted < 0 ? posted : job.result;
}

long hg_splice_one_way(int from, int to, volatile int64_t *last_activity, volatile int *peer_done) {
    int pipefd[2];
    if (pipe2(pipefd, O_CLOEXEC) < 0) return -errno;
    fcntl(pipefd[0], F_SETPIPE_SZ, 1 << 20);
    long total = 0;
    int quiet_seconds = 0;
    int reset = -1;  // the side to reset because the other one was reset
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
        if (in < 0 && errno == ECONNRESET) reset = to;
        if (in <= 0) break;
        ssize_t left = in;
        while (left > 0) {
            // No SPLICE_F_MORE here: it would cork the last segment of a response.
            ssize_t out = splice(pipefd[0], NULL, to, NULL, (size_t)left, SPLICE_F_MOVE);
            if (out < 0 && errno == EINTR) continue;
            if (out < 0 && (errno == ECONNRESET || errno == EPIPE)) reset = from;
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
    if (reset >= 0) {
        // A reset is passed on as a reset, not as an orderly end: with a zero linger
        // time, closing the socket (after both directions are done) sends RST. Shutting
        // its reading side wakes the other direction's thread, which then finishes.
        struct linger abort_on_close = {.l_onoff = 1, .l_linger = 0};
        setsockopt(reset, SOL_SOCKET, SO_LINGER, &abort_on_close, sizeof abort_on_close);
        shutdown(reset, SHUT_RD);
    } else {
        // The other side learns that this direction is finished.
        shutdown(to, SHUT_WR);
    }
    __atomic_store_n(peer_done, 1, __ATOMIC_RELAXED);
    return total;
}

int hg_accept_cloexec(int listener) {
    int fd = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
    return fd < 0 ? -errno : fd;
}
