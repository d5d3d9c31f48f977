// A long-lived thread that runs one job at a time for its caller. The spawn uses two:
// the thread that calls clone (it stays the parent of every sandbox, which
// PR_SET_PDEATHSIG is tied to) and the thread that writes id maps while it is frozen.
#ifndef HG_WORKER_H
#define HG_WORKER_H

#include <pthread.h>

struct hg_worker {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    void (*job)(void *);
    void *arg;
    int busy;
    int started;
    int retiring;
};

#define HG_WORKER_INIT {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL, NULL, 0, 0, 0}

/// Hand job(arg) to the worker, starting its thread on first use (with every signal
/// blocked). One job at a time: the caller waits for it with hg_worker_wait.
/// Returns 0, or a negative errno when the thread could not be started.
int hg_worker_post(struct hg_worker *w, void (*job)(void *), void *arg);
/// Wait until the posted job has returned.
void hg_worker_wait(struct hg_worker *w);
/// Called by a job: its thread ends once the job returns (it is in a state no later job
/// may inherit, such as another namespace), and the next post starts a fresh one.
void hg_worker_retire(struct hg_worker *w);

#endif
