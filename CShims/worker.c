#define _GNU_SOURCE
#include "hg_worker.h"

#include <signal.h>

static void *worker_main(void *opaque) {
    struct hg_worker *w = opaque;
    pthread_mutex_lock(&w->lock);
    for (;;) {
        while (w->job == NULL) pthread_cond_wait(&w->cond, &w->lock);
        void (*job)(void *) = w->job;
        void *arg = w->arg;
        pthread_mutex_unlock(&w->lock);
        job(arg);
        pthread_mutex_lock(&w->lock);
        w->job = NULL;
        w->busy = 0;
        int retiring = w->retiring;
        if (retiring) {
            w->retiring = 0;
            w->started = 0;
        }
        pthread_cond_broadcast(&w->cond);
        if (retiring) break;
    }
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

void hg_worker_retire(struct hg_worker *w) {
    pthread_mutex_lock(&w->lock);
    w->retiring = 1;
    pthread_mutex_unlock(&w->lock);
}

int hg_worker_post(struct hg_worker *w, void (*job)(void *), void *arg) {
    pthread_mutex_lock(&w->lock);
    if (!w->started) {
        sigset_t all, saved;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &saved);
        pthread_t thread;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        int err = pthread_create(&thread, &attr, worker_main, w);
        pthread_attr_destroy(&attr);
        pthread_sigmask(SIG_SETMASK, &saved, NULL);
        if (err != 0) {
            pthread_mutex_unlock(&w->lock);
            return -err;
        }
        w->started = 1;
    }
    while (w->busy) pthread_cond_wait(&w->cond, &w->lock);
    w->job = job;
    w->arg = arg;
    w->busy = 1;
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->lock);
    return 0;
}

void hg_worker_wait(struct hg_worker *w) {
    pthread_mutex_lock(&w->lock);
    while (w->busy) pthread_cond_wait(&w->cond, &w->lock);
    pthread_mutex_unlock(&w->lock);
}
