// The proxy's byte mover: non-blocking sockets, epoll, and splice(2) through a pipe.
// Mechanism only: which bytes go where, and how many, is decided in Swift, which also
// parses every untrusted byte (HangarProxy). Each function is one syscall sequence and
// returns a negative errno on failure.
#define _GNU_SOURCE
#include "hangar_shims.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

_Static_assert(sizeof(struct hg_flow) == 40, "hg_flow is mirrored in Swift");

int hg_epoll_create(void) {
    int fd = epoll_create1(EPOLL_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

int hg_epoll_add(int epoll, int fd, uint32_t events, uint64_t data) {
    struct epoll_event event = {.events = events, .data.u64 = data};
    return epoll_ctl(epoll, EPOLL_CTL_ADD, fd, &event) < 0 ? -errno : 0;
}

int hg_epoll_remove(int epoll, int fd) {
    return epoll_ctl(epoll, EPOLL_CTL_DEL, fd, NULL) < 0 ? -errno : 0;
}

int hg_epoll_wait(int epoll, struct hg_event *events, int max, int timeout_ms) {
    struct epoll_event raw[256];
    if (max > 256) max = 256;
    int n = epoll_wait(epoll, raw, max, timeout_ms);
    if (n < 0) return -errno;
    for (int i = 0; i < n; i++) {
        events[i].data = raw[i].data.u64;
        events[i].events = raw[i].events;
    }
    return n;
}

const uint32_t hg_epoll_in = EPOLLIN, hg_epoll_out = EPOLLOUT, hg_epoll_rdhup = EPOLLRDHUP, hg_epoll_et = EPOLLET,
               hg_epoll_exclusive = EPOLLEXCLUSIVE;

int hg_pipe_open(int fds[2], int size) {
    if (pipe2(fds, O_CLOEXEC | O_NONBLOCK) < 0) return -errno;
    int capacity = fcntl(fds[0], F_SETPIPE_SZ, size);
    // Above /proc/sys/fs/pipe-max-size without CAP_SYS_RESOURCE: keep the default size.
    if (capacity < 0) capacity = fcntl(fds[0], F_GETPIPE_SZ);
    if (capacity < 0) {
        int err = -errno;
        close(fds[0]);
        close(fds[1]);
        return err;
    }
    return capacity;
}

int hg_listen_tcp4(const char *address, uint16_t port, int backlog, int nonblocking, uint16_t *bound) {
    struct sockaddr_in in = {.sin_family = AF_INET, .sin_port = htons(port)};
    if (inet_pton(AF_INET, address, &in.sin_addr) != 1) return -EINVAL;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | (nonblocking ? SOCK_NONBLOCK : 0), 0);
    if (fd < 0) return -errno;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    socklen_t length = sizeof in;
    if (bind(fd, (struct sockaddr *)&in, sizeof in) < 0 || listen(fd, backlog) < 0 ||
        getsockname(fd, (struct sockaddr *)&in, &length) < 0) {
        int err = -errno;
        close(fd);
        return err;
    }
    *bound = ntohs(in.sin_port);
    return fd;
}

int hg_accept_nonblocking(int listener, char *peer, size_t peer_size) {
    struct sockaddr_storage address;
    socklen_t length = sizeof address;
    int fd = accept4(listener, (struct sockaddr *)&address, &length, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) return -errno;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    peer[0] = 0;
    if (address.ss_family == AF_INET) {
        inet_ntop(AF_INET, &((struct sockaddr_in *)&address)->sin_addr, peer, (socklen_t)peer_size);
    } else if (address.ss_family == AF_INET6) {
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&address)->sin6_addr, peer, (socklen_t)peer_size);
    }
    return fd;
}

int hg_connect_tcp4(const char *address, uint16_t port, int nonblocking) {
    struct sockaddr_in in = {.sin_family = AF_INET, .sin_port = htons(port)};
    if (inet_pton(AF_INET, address, &in.sin_addr) != 1) return -EINVAL;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | (nonblocking ? SOCK_NONBLOCK : 0), 0);
    if (fd < 0) return -errno;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&in, sizeof in) < 0 && errno != EINPROGRESS) {
        int err = -errno;
        close(fd);
        return err;
    }
    return fd;
}

long hg_peek(int fd, uint8_t *buffer, size_t size) {
    for (;;) {
        ssize_t n = recv(fd, buffer, size, MSG_PEEK | MSG_DONTWAIT);
        if (n < 0 && errno == EINTR) continue;
        return n < 0 ? -errno : n;
    }
}

long hg_receive(int fd, uint8_t *buffer, size_t size) {
    for (;;) {
        ssize_t n = recv(fd, buffer, size, MSG_DONTWAIT);
        if (n < 0 && errno == EINTR) continue;
        return n < 0 ? -errno : n;
    }
}

long hg_send(int fd, const uint8_t *buffer, size_t size) {
    for (;;) {
        ssize_t n = send(fd, buffer, size, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        return n < 0 ? -errno : n;
    }
}

int hg_shutdown_write(int fd) {
    return shutdown(fd, SHUT_WR) < 0 ? -errno : 0;
}

int hg_close_reset(int fd) {
    struct linger linger = {.l_onoff = 1, .l_linger = 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &linger, sizeof linger);
    return close(fd) < 0 ? -errno : 0;
}

/// A call moves at most this much before giving the loop back to other connections.
#define HG_FLOW_SLICE (8L << 20)

/// Moves what `from` has into the pipe's free room while `to` is full, so the sender is
/// not held up by a destination that is momentarily slower; what this finds (nothing,
/// the end, an error) is found again by the next read.
static void hg_flow_prefill(struct hg_flow *flow, int32_t capacity) {
    while (flow->remaining != 0 && flow->buffered < capacity) {
        long want = capacity - flow->buffered;
        if (flow->remaining > 0 && flow->remaining < want) want = flow->remaining;
        ssize_t in = splice(flow->from, NULL, flow->pipe_write, NULL, (size_t)want, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
        if (in < 0 && errno == EINTR) continue;
        if (in <= 0) return;
        flow->buffered += in;
        if (flow->remaining > 0) flow->remaining -= in;
    }
}

int hg_flow_run(struct hg_flow *flow, int32_t capacity) {
    long moved_here = 0;
    for (;;) {
        while (flow->buffered > 0) {
            ssize_t out = splice(flow->pipe_read, NULL, flow->to, NULL, (size_t)flow->buffered,
                                 SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
            if (out < 0 && errno == EINTR) continue;
            if (out < 0 && errno == EAGAIN) {
                hg_flow_prefill(flow, capacity);
                return HG_FLOW_WRITE;
            }
            if (out < 0) return -errno;
            flow->buffered -= out;
            flow->moved += out;
            moved_here += out;
        }
        if (flow->remaining == 0) return HG_FLOW_DONE;
        if (moved_here >= HG_FLOW_SLICE) return HG_FLOW_MORE;
        long want = capacity;
        if (flow->remaining > 0 && flow->remaining < want) want = flow->remaining;
        ssize_t in = splice(flow->from, NULL, flow->pipe_write, NULL, (size_t)want, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
        if (in < 0 && errno == EINTR) continue;
        if (in < 0 && errno == EAGAIN) return HG_FLOW_READ;
        if (in < 0) return -errno;
        if (in == 0) return HG_FLOW_EOF;
        flow->buffered += in;
        if (flow->remaining > 0) flow->remaining -= in;
    }
}

int hg_keepalive(int fd, int idle_seconds, int interval_seconds, int count) {
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one) < 0 ||
        setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle_seconds, sizeof idle_seconds) < 0 ||
        setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval_seconds, sizeof interval_seconds) < 0 ||
        setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof count) < 0)
        return -errno;
    return 0;
}

int hg_thread_id(void) {
    return (int)gettid();
}
