// Processes: pidfds, and the sealed copy of hangar-init that every sandbox executes.
#define _GNU_SOURCE
#include "hangar_shims.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <linux/loop.h>
#include <linux/openat2.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <sys/capability.h>
#include <sys/ioctl.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

int hg_pidfd_send_signal(int pidfd, int sig) {
    return syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, 0) < 0 ? -errno : 0;
}

int hg_pidfd_reap(int pidfd, int *code, int *by_signal) {
    siginfo_t info = {0};
    if (waitid(P_PIDFD, (id_t)pidfd, &info, WEXITED | WNOHANG) < 0) return -errno;
    if (info.si_pid == 0) return 0;
    *by_signal = info.si_code == CLD_KILLED || info.si_code == CLD_DUMPED;
    *code = info.si_status;
    return 1;
}

int hg_sealed_exec_copy(const char *path, const char *name) {
    int src = open(path, O_RDONLY | O_CLOEXEC);
    if (src < 0) return -errno;
    struct stat st;
    int err = fstat(src, &st) < 0 ? -errno : 0;
    int fd = -1;
    // MFD_EXEC (Linux 6.3+): executable even where vm.memfd_noexec makes memfds no-exec by
    // default; older kernels refuse the flag, and their memfds are executable anyway.
    if (err == 0) {
        fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING | 0x0010u /* MFD_EXEC */);
        if (fd < 0 && errno == EINVAL) fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
        if (fd < 0) err = -errno;
    }
    for (off_t done = 0; err == 0 && done < st.st_size;) {
        ssize_t n = sendfile(fd, src, NULL, (size_t)(st.st_size - done));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) err = n < 0 ? -errno : -EIO;
        else done += n;
    }
    if (err == 0 && fchmod(fd, 0555) < 0) err = -errno;
    if (err == 0 && fcntl(fd, F_ADD_SEALS, F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE) < 0) err = -errno;
    close(src);
    if (err != 0) {
        if (fd >= 0) close(fd);
        return err;
    }
    return fd;
}

int hg_cap_last(void) {
    int bits = (int)cap_max_bits();
    return bits > 0 ? bits - 1 : CAP_LAST_CAP;
}

const char *hg_errno_name(int err) { return strerrorname_np(err); }

int hg_send_with_fds(int socket, const void *data, size_t length, const int *fds, size_t fd_count) {
    if (fd_count == 0 || fd_count > HG_HANDOFF_MAX_FDS) return -EINVAL;
    union {
        struct cmsghdr header;
        char space[CMSG_SPACE(sizeof(int) * HG_HANDOFF_MAX_FDS)];
    } control;
    memset(&control, 0, sizeof control);
    struct iovec iov = {.iov_base = (void *)data, .iov_len = length};
    struct msghdr message = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.space, .msg_controllen = CMSG_SPACE(sizeof(int) * fd_count)};
    struct cmsghdr *c = CMSG_FIRSTHDR(&message);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fd_count);
    memcpy(CMSG_DATA(c), fds, sizeof(int) * fd_count);
    ssize_t n;
    do n = sendmsg(socket, &message, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    if (n < 0) return -errno;
    return (size_t)n == length ? 0 : -EMSGSIZE;
}

int hg_eventfd(int nonblocking) {
    int fd = eventfd(0, EFD_CLOEXEC | (nonblocking ? EFD_NONBLOCK : 0));
    return fd < 0 ? -errno : fd;
}

int hg_pipe(int fds[2]) { return pipe2(fds, O_CLOEXEC) < 0 ? -errno : 0; }

int hg_set_nice(pid_t pid, int nice) { return setpriority(PRIO_PROCESS, (id_t)pid, nice) < 0 ? -errno : 0; }

int hg_loop_attach(int file_fd, char *path, size_t path_size) {
    int control = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
    if (control < 0) return -errno;
    int result = -EBUSY;
    // Another process may take the free device first: then ask again.
    for (int attempt = 0; attempt < 16 && result == -EBUSY; attempt++) {
        int number = ioctl(control, LOOP_CTL_GET_FREE);
        if (number < 0) {
            result = -errno;
            break;
        }
        snprintf(path, path_size, "/dev/loop%d", number);
        int device = open(path, O_RDWR | O_CLOEXEC);
        if (device < 0) {
            result = -errno;
            continue;
        }
        struct loop_config config;
        memset(&config, 0, sizeof config);
        config.fd = (uint32_t)file_fd;
        config.info.lo_flags = LO_FLAGS_AUTOCLEAR;
        if (ioctl(device, LOOP_CONFIGURE, &config) == 0) {
            result = device;
        } else {
            result = -errno;
            close(device);
        }
    }
    close(control);
    return result;
}

int hg_open_path_no_symlinks(const char *path) {
    struct open_how how;
    memset(&how, 0, sizeof how);
    how.flags = O_PATH | O_CLOEXEC;
    how.resolve = RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
    long fd = syscall(SYS_openat2, AT_FDCWD, path, &how, sizeof how);
    return fd < 0 ? -errno : (int)fd;
}

int hg_setxattr(const char *path, const char *name, const void *value, size_t size) {
    return setxattr(path, name, value, size, 0) < 0 ? -errno : 0;
}

int hg_probe_landlock(void) {
    long abi = syscall(SYS_landlock_create_ruleset, NULL, 0, 1 /* LANDLOCK_CREATE_RULESET_VERSION */);
    return abi < 0 ? -errno : (int)abi;
}

int hg_probe_clone3(void) {
    // NULL arguments: EFAULT/EINVAL where clone3 exists, ENOSYS where it does not.
    return syscall(SYS_clone3, NULL, 0) < 0 && errno == ENOSYS ? -ENOSYS : 0;
}

int hg_probe_pidfd(void) {
    long fd = syscall(SYS_pidfd_open, getpid(), 0);
    if (fd < 0) return -errno;
    close((int)fd);
    return 0;
}

int hg_hmac_sha256(const void *key, size_t key_length, const void *data, size_t length, uint8_t out[32]) {
    unsigned int size = 32;
    return HMAC(EVP_sha256(), key, (int)key_length, data, length, out, &size) != NULL && size == 32 ? 0 : -EINVAL;
}

int hg_equal_constant_time(const void *a, const void *b, size_t length) {
    return CRYPTO_memcmp(a, b, length) == 0;
}
