// Seccomp programs: compiled with libseccomp once per profile, exported as raw BPF.
#define _GNU_SOURCE
#include "hangar_shims.h"

#include <errno.h>
#include <seccomp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

uint32_t hg_seccomp_act_allow(void) { return SCMP_ACT_ALLOW; }
uint32_t hg_seccomp_act_errno(uint16_t err) { return SCMP_ACT_ERRNO(err); }
uint32_t hg_seccomp_act_kill_process(void) { return SCMP_ACT_KILL_PROCESS; }

int hg_seccomp_resolve(const char *name) { return seccomp_syscall_resolve_name(name); }

char *hg_seccomp_name(int nr) { return seccomp_syscall_resolve_num_arch(SCMP_ARCH_NATIVE, nr); }

static int export_bpf(scmp_filter_ctx ctx, struct hg_bpf *out) {
    int fd = memfd_create("hangar-seccomp", MFD_CLOEXEC);
    if (fd < 0) return -errno;
    int err = seccomp_export_bpf(ctx, fd);
    struct stat st;
    if (err == 0 && fstat(fd, &st) < 0) err = -errno;
    if (err == 0 && (st.st_size <= 0 || st.st_size % 8 != 0 || st.st_size / 8 > UINT16_MAX)) err = -E2BIG;
    void *buf = NULL;
    if (err == 0 && (buf = malloc((size_t)st.st_size)) == NULL) err = -ENOMEM;
    if (err == 0 && pread(fd, buf, (size_t)st.st_size, 0) != st.st_size) err = -EIO;
    close(fd);
    if (err != 0) {
        free(buf);
        return err;
    }
    out->instructions = buf;
    out->count = (uint16_t)(st.st_size / 8);
    return 0;
}

int hg_seccomp_compile(uint32_t default_action, uint32_t bad_arch_action, const struct hg_seccomp_rule *rules,
                       size_t count, struct hg_bpf *out, size_t *bad_rule) {
    scmp_filter_ctx ctx = seccomp_init(default_action);
    if (ctx == NULL) return -ENOMEM;
    int err = seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, bad_arch_action);
    // A binary tree over syscall numbers instead of a linear chain: fewer instructions
    // per call, and a much cheaper filter load (the kernel emulates the filter for every
    // syscall number to build its action cache).
    if (err == 0) err = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_OPTIMIZE, 2);
    for (size_t i = 0; i < count && err == 0; i++) {
        const struct hg_seccomp_rule *rule = &rules[i];
        int nr = seccomp_syscall_resolve_name(rule->name);
        if (nr == __NR_SCMP_ERROR) continue;  // not a syscall of this architecture
        struct scmp_arg_cmp cmp[2];
        if (rule->match_count > 2) {
            err = -EINVAL;
        } else {
            for (uint32_t m = 0; m < rule->match_count; m++) {
                cmp[m] = (struct scmp_arg_cmp){.arg = rule->matches[m].arg,
                                               .op = SCMP_CMP_MASKED_EQ,
                                               .datum_a = rule->matches[m].mask,
                                               .datum_b = rule->matches[m].value};
            }
            err = seccomp_rule_add_array(ctx, rule->action, nr, rule->match_count, cmp);
        }
        if (err == -EACCES) err = 0;  // the rule's action is the filter's default
        if (err != 0 && bad_rule != NULL) *bad_rule = i;
    }
    if (err == 0) err = export_bpf(ctx, out);
    seccomp_release(ctx);
    return err;
}

void hg_bpf_free(struct hg_bpf *bpf) {
    free(bpf->instructions);
    bpf->instructions = NULL;
    bpf->count = 0;
}
