// Raw system calls for the child between clone and execve: no errno, no libc state,
// no allocation. Each returns the kernel's value: >= 0, or -errno.
#ifndef HG_SYSCALL_H
#define HG_SYSCALL_H

#include <sys/syscall.h>

static inline long hg_sys6(long n, long a, long b, long c, long d, long e, long f) {
#if defined(__x86_64__)
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    register long r9 __asm__("r9") = f;
    long ret;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return ret;
#elif defined(__aarch64__)
    register long x8 __asm__("x8") = n;
    register long x0 __asm__("x0") = a;
    register long x1 __asm__("x1") = b;
    register long x2 __asm__("x2") = c;
    register long x3 __asm__("x3") = d;
    register long x4 __asm__("x4") = e;
    register long x5 __asm__("x5") = f;
    __asm__ volatile("svc 0"
                     : "+r"(x0)
                     : "r"(x8), "r"(x1), "r"(x2), "r"(x3), "r"(x4), "r"(x5)
                     : "memory");
    return x0;
#else
#error "hg_syscall.h: add this architecture"
#endif
}

#define HG_SYS0(n) hg_sys6((n), 0, 0, 0, 0, 0, 0)
#define HG_SYS1(n, a) hg_sys6((n), (long)(a), 0, 0, 0, 0, 0)
#define HG_SYS2(n, a, b) hg_sys6((n), (long)(a), (long)(b), 0, 0, 0, 0)
#define HG_SYS3(n, a, b, c) hg_sys6((n), (long)(a), (long)(b), (long)(c), 0, 0, 0)
#define HG_SYS4(n, a, b, c, d) hg_sys6((n), (long)(a), (long)(b), (long)(c), (long)(d), 0, 0)
#define HG_SYS5(n, a, b, c, d, e) hg_sys6((n), (long)(a), (long)(b), (long)(c), (long)(d), (long)(e), 0)

#endif
