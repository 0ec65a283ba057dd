/* Generic driver of the acceptance matrix, linked into every target.
 *
 * argv: NWORKERS [allow=V1,V2,...] [sig] [seccomp] [lib=PATH]
 * Workers call the scenario's scenario_value() continuously, spending a few
 * percent of each loop inside it (call, then sleep 1 ms); each records its
 * latest value and counts values outside the allowed set, checked against the
 * set that was in force when the call started (so a set change never judges a
 * value produced before it).  Extra workers, when asked for or provided:
 *   sig:  a thread that takes SIGUSR1 every millisecond and calls the scenario
 *         inside its handler, so apply and revert meet signal frames;
 *   scenario_busy_value(): a thread that calls it back to back (it spends long
 *         stretches inside a replaced function);
 *   scenario_thread(): a thread running it, its values not recorded.
 * Control lines on stdin, answers on stdout:
 *   value           -> "value V0 V1 ..." after every worker made 2 new calls
 *   bad             -> "bad C0 C1 ... last L"
 *   allow V1 V2 ... -> "allowed N"
 *   load            -> (lib=PATH) dlopen the scenario library, start workers
 *   release         -> scenario_release(), "released"
 *   quit            -> exit(0)
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#ifndef MATRIX_DLOPEN
extern int scenario_value(void);
extern int scenario_busy_value(void) __attribute__((weak));
extern void scenario_release(void) __attribute__((weak));
extern void scenario_thread(void) __attribute__((weak));
#endif

#define MAX_WORKERS 16
#define MAX_ALLOWED 8

struct allowed { int n; int v[MAX_ALLOWED]; };

static int (*value_fn)(void);
static int (*busy_fn)(void);
static void (*release_fn)(void);
static void (*thread_fn)(void);
static struct allowed *volatile allowed_now;

/* Parse up to MAX_ALLOWED integers separated by spaces or commas. */
static struct allowed *parse_allowed(const char *p)
{
    struct allowed *n = calloc(1, sizeof *n);
    char *end;
    for (;;) {
        while (*p == ',' || *p == ' ')
            p++;
        long v = strtol(p, &end, 10);
        if (end == p || n->n == MAX_ALLOWED)
            break;
        n->v[n->n++] = (int)v;
        p = end;
    }
    return n;
}
static volatile int latest[MAX_WORKERS];
static volatile long calls[MAX_WORKERS];
static volatile long bad[MAX_WORKERS];
static volatile int last_bad = 0x7fffffff;
static int nworkers, nslots, sig_slot = -1;
static pthread_t sig_thread;

static int is_allowed(const struct allowed *a, int v)
{
    for (int i = 0; i < a->n; i++)
        if (a->v[i] == v)
            return 1;
    return 0;
}

static void record(int slot, struct allowed *a, int v)
{
    latest[slot] = v;
    if (!is_allowed(a, v)) {
        __atomic_add_fetch(&bad[slot], 1, __ATOMIC_SEQ_CST);
        last_bad = v;
    }
    __atomic_add_fetch(&calls[slot], 1, __ATOMIC_SEQ_CST);
}

static void pause_ms(long ms)
{
    struct timespec ts = { 0, ms * 1000000L };
    while (nanosleep(&ts, &ts) != 0)
        ;
}

static void *worker(void *arg)
{
    int slot = (int)(long)arg;
    for (;;) {
        struct allowed *a = __atomic_load_n(&allowed_now, __ATOMIC_SEQ_CST);
        record(slot, a, value_fn());
        pause_ms(1);
    }
    return NULL;
}

static void *busy_worker(void *arg)
{
    int slot = (int)(long)arg;
    for (;;) {
        struct allowed *a = __atomic_load_n(&allowed_now, __ATOMIC_SEQ_CST);
        record(slot, a, busy_fn());
    }
    return NULL;
}

static void on_usr1(int s)
{
    (void)s;
    struct allowed *a = __atomic_load_n(&allowed_now, __ATOMIC_SEQ_CST);
    record(sig_slot, a, value_fn());
    pause_ms(1); /* stay in the handler a while: a signal frame on the stack */
}

static void *sig_target(void *arg)
{
    (void)arg;
    for (;;)
        pause();
    return NULL;
}

static void *sig_sender(void *arg)
{
    (void)arg;
    for (;;) {
        pthread_kill(sig_thread, SIGUSR1);
        pause_ms(1);
    }
    return NULL;
}

static void *scenario_thread_main(void *arg)
{
    (void)arg;
    thread_fn();
    return NULL;
}

static void start(pthread_t *t, void *(*fn)(void *), long slot)
{
    if (pthread_create(t, NULL, fn, (void *)slot) != 0) {
        perror("pthread_create");
        exit(2);
    }
}

static int with_sig;

static void start_workers(void)
{
    pthread_t t;
    nslots = nworkers;
    for (int i = 0; i < nworkers; i++)
        start(&t, worker, i);
    if (busy_fn)
        start(&t, busy_worker, nslots++);
    if (thread_fn)
        start(&t, scenario_thread_main, 0);
    if (with_sig) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_usr1;
        sa.sa_flags = SA_RESTART;
        sigaction(SIGUSR1, &sa, NULL);
        sig_slot = nslots++;
        start(&sig_thread, sig_target, 0);
        start(&t, sig_sender, 0);
    }
}

static void install_seccomp(void)
{
    struct sock_filter filter[] = { BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW) };
    struct sock_fprog prog = { 1, filter };
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0) {
        perror("seccomp");
        exit(2);
    }
}

/* Wait until every worker made 2 more calls, so the values are fresh. */
static int wait_fresh(void)
{
    long seen[MAX_WORKERS];
    for (int i = 0; i < nslots; i++)
        seen[i] = calls[i];
    for (int tries = 0; tries < 5000; tries++) {
        int fresh = 1;
        for (int i = 0; i < nslots; i++)
            if (calls[i] < seen[i] + 2)
                fresh = 0;
        if (fresh)
            return 1;
        pause_ms(1);
    }
    return 0;
}

int main(int argc, char **argv)
{
    const char *lib = NULL;
    setvbuf(stdout, NULL, _IOLBF, 0);
    nworkers = argc > 1 ? atoi(argv[1]) : 1;
    if (nworkers < 1 || nworkers > MAX_WORKERS - 2) {
        fprintf(stderr, "bad worker count\n");
        return 2;
    }
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "sig"))
            with_sig = 1;
        else if (!strcmp(argv[i], "seccomp"))
            install_seccomp();
        else if (!strncmp(argv[i], "lib=", 4))
            lib = argv[i] + 4;
        else if (!strncmp(argv[i], "allow=", 6))
            allowed_now = parse_allowed(argv[i] + 6);
    }
    if (!allowed_now)
        allowed_now = parse_allowed(""); /* nothing allowed until the test says what is */
#ifndef MATRIX_DLOPEN
    value_fn = scenario_value;
    busy_fn = scenario_busy_value;
    release_fn = scenario_release;
    thread_fn = scenario_thread;
    start_workers();
#endif
    printf("ready %d\n", (int)getpid());
    char line[512];
    while (fgets(line, sizeof line, stdin)) {
        if (!strncmp(line, "value", 5)) {
            if (!nslots) {
                printf("error no workers\n");
                continue;
            }
            if (!wait_fresh()) {
                printf("error workers stalled\n");
                continue;
            }
            printf("value");
            for (int i = 0; i < nslots; i++)
                printf(" %d", latest[i]);
            printf("\n");
        } else if (!strncmp(line, "bad", 3)) {
            printf("bad");
            for (int i = 0; i < nslots; i++)
                printf(" %ld", bad[i]);
            printf(" last %d\n", last_bad);
        } else if (!strncmp(line, "allow", 5)) {
            struct allowed *n = parse_allowed(line + 5);
            /* the old set is never freed: a worker may still be judging with it */
            __atomic_store_n(&allowed_now, n, __ATOMIC_SEQ_CST);
            printf("allowed %d\n", n->n);
        } else if (!strncmp(line, "load", 4)) {
#ifdef MATRIX_DLOPEN
            void *h = lib ? dlopen(lib, RTLD_NOW) : NULL;
            if (!h) {
                printf("error dlopen %s\n", dlerror());
                continue;
            }
            value_fn = (int (*)(void))dlsym(h, "scenario_value");
            busy_fn = (int (*)(void))dlsym(h, "scenario_busy_value");
            release_fn = (void (*)(void))dlsym(h, "scenario_release");
            thread_fn = (void (*)(void))dlsym(h, "scenario_thread");
            if (!value_fn) {
                printf("error no scenario_value\n");
                continue;
            }
            start_workers();
            printf("loaded\n");
#else
            (void)lib;
            printf("error not a dlopen driver\n");
#endif
        } else if (!strncmp(line, "release", 7)) {
            if (release_fn)
                release_fn();
            printf("released\n");
        } else if (!strncmp(line, "quit", 4)) {
            exit(0);
        } else {
            printf("error unknown command\n");
        }
    }
    return 0;
}
