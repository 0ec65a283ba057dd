"""The target of the callback and shadow-variable tests (issue 19), its flavors and its patches.

Threads: main (thread 1, the one a callback borrows) blocks SIGINT and SIGUSR2 and waits for them in
``sigwait``, printing "GOT SIGNAL N" for each: a signal of ours would show.  A holder thread keeps
``big_lock`` 300 ms of every 320, so a callback that takes it must have the other threads running.
16 workers call ``item_value(&items[k])`` for k rotating over 16 items (so many threads use one object
at once) and tally, per item, what they saw: the plain value, +1000 or +2000 (a patch), anything
else (bad).  A control thread answers on stdin:

  "stat"          -> "plain A p1 B p2 C bad D ran R0 R1 R2 R3" (ran: runs of each callback kind)
  "mode K M"      -> "ok": callback kind K (0 pre-patch, 1 post-patch, 2 pre-unpatch, 3 post-unpatch)
                     behaves as M (0 succeed, 1 refuse with 7, 2 block forever, 3 crash)
  "pause"/"resume" -> the workers park (all of them, "paused") / run on ("resumed")
  "items"         -> "items A0 ... A15 T0 ... T15": each item's address, and its patched calls (+1000 or +2000)
  "fork M"        -> "forked PID": a child (one thread) calls item_value M times on every item, then waits

Patches (each bound per flavor): ``cb`` (item_value + 1000, the four callbacks of ``cb_mode``, each
taking big_lock), ``shadow1`` / ``shadow2`` (+1000 / +2000, and both count each call in the
shadow variable (item, 1) = {count, magic}, allocated by get_or_alloc with a constructor),
``shadowfree`` (+1000 with the same counting, and a post-unpatch callback freeing every variable of
id 1).
"""


from . import cbuild
from .cbuild import bind_patch
from .process import Target

FLAVORS = ("pie", "nopie", "static", "shlib", "O0")

TARGET_C = r'''
#include <pthread.h>
struct item { long id; long value; };
struct item items[16];
int cb_mode[4];
volatile int cb_ran[4];
pthread_mutex_t big_lock = PTHREAD_MUTEX_INITIALIZER;

__attribute__((noinline)) long item_value(struct item *it)
{
    __asm__ volatile("");
    return it->value;
}
'''

MAIN_C = r'''
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct item { long id; long value; };
extern struct item items[16];
extern int cb_mode[4];
extern volatile int cb_ran[4];
extern pthread_mutex_t big_lock;
long item_value(struct item *it);

#define WORKERS 16
static volatile long plain[16], p1[16], p2[16], bad;
static volatile int paused, parked;

static void *holder(void *a)
{
    for (;;) {
        pthread_mutex_lock(&big_lock);
        usleep(300000);
        pthread_mutex_unlock(&big_lock);
        usleep(20000);
    }
    return a;
}

static void *worker(void *a)
{
    long w = (long)a;
    for (long i = 0;; i++) {
        if (paused) {
            __atomic_add_fetch(&parked, 1, __ATOMIC_SEQ_CST);
            while (paused)
                usleep(1000);
            __atomic_sub_fetch(&parked, 1, __ATOMIC_SEQ_CST);
        }
        long k = (w + i) % 16;
        long d = item_value(&items[k]) - items[k].value;
        if (d == 0) __atomic_add_fetch(&plain[k], 1, __ATOMIC_RELAXED);
        else if (d == 1000) __atomic_add_fetch(&p1[k], 1, __ATOMIC_RELAXED);
        else if (d == 2000) __atomic_add_fetch(&p2[k], 1, __ATOMIC_RELAXED);
        else __atomic_add_fetch(&bad, 1, __ATOMIC_RELAXED);
        if (i % 8 == 0)
            usleep(200);
    }
    return a;
}

static long sum(volatile long *v) { long s = 0; for (int k = 0; k < 16; k++) s += v[k]; return s; }

static void *control(void *a)
{
    char line[128];
    setvbuf(stdout, NULL, _IOLBF, 0);
    while (fgets(line, sizeof line, stdin)) {
        int k, m;
        if (!strncmp(line, "stat", 4)) {
            printf("plain %ld p1 %ld p2 %ld bad %ld ran %d %d %d %d\n", sum(plain), sum(p1), sum(p2), bad,
                   cb_ran[0], cb_ran[1], cb_ran[2], cb_ran[3]);
        } else if (sscanf(line, "mode %d %d", &k, &m) == 2 && k >= 0 && k < 4) {
            cb_mode[k] = m;
            printf("ok\n");
        } else if (!strncmp(line, "pause", 5)) {
            paused = 1;
            while (parked != WORKERS) usleep(1000);
            printf("paused\n");
        } else if (!strncmp(line, "resume", 6)) {
            paused = 0;
            printf("resumed\n");
        } else if (sscanf(line, "fork %d", &m) == 1) {
            pid_t child = fork();   /* with the workers paused: no thread is inside a shadow call */
            if (child == 0) {
                for (k = 0; k < 16; k++)
                    for (int i = 0; i < m; i++)
                        item_value(&items[k]);
                printf("forked %d\n", (int)getpid());
                for (;;) pause();
            }
        } else if (!strncmp(line, "items", 5)) {
            printf("items");
            for (k = 0; k < 16; k++) printf(" %lu", (unsigned long)&items[k]);
            for (k = 0; k < 16; k++) printf(" %ld", p1[k] + p2[k]);
            printf("\n");
        } else {
            printf("pong\n");
        }
    }
    exit(0);
    return a;
}

int main(void)
{
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGINT);
    sigaddset(&s, SIGUSR2);
    pthread_sigmask(SIG_BLOCK, &s, NULL);   /* inherited by every thread: only sigwait takes them */
    signal(SIGPIPE, SIG_IGN);                /* the signal a remote run window may use */
    setvbuf(stdout, NULL, _IOLBF, 0);
    for (int k = 0; k < 16; k++) { items[k].id = k; items[k].value = 10 * k + 7; }
    pthread_t t;
    pthread_create(&t, NULL, holder, NULL);
    for (long w = 0; w < WORKERS; w++)
        pthread_create(&t, NULL, worker, (void *)w);
    pthread_create(&t, NULL, control, NULL);
    printf("ready\n");
    for (;;) {
        int sig;
        if (sigwait(&s, &sig) == 0)
            printf("GOT SIGNAL %d\n", sig);
    }
}
'''

_ITEM = "struct item { long id; long value; };\n"
_COUNT = r'''
struct tally { long count; long magic; };
static int tally_init(void *obj, void *data, void *arg)
{
    (void)obj;
    ((struct tally *)data)->magic = *(long *)arg;
    return 0;
}
static void count_call(struct item *it)
{
    long magic = 0x5eed;
    struct tally *t = vzp_shadow_get_or_alloc(it, 1, sizeof *t, tally_init, &magic);
    if (t)
        __atomic_add_fetch(&t->count, 1, __ATOMIC_RELAXED);
}
'''

PATCHES = {
    "cb": '#include "vzp.h"\n#include <pthread.h>\n#include <unistd.h>\n' + _ITEM + r'''
extern int cb_mode[4];
extern volatile int cb_ran[4];
extern pthread_mutex_t big_lock;
long item_value(struct item *it) { return it->value + 1000; }
static int act(int k)
{
    pthread_mutex_lock(&big_lock);   /* held 300 ms of every 320 by the holder thread */
    cb_ran[k]++;
    pthread_mutex_unlock(&big_lock);
    switch (cb_mode[k]) {
    case 1: return 7;
    case 2: for (;;) usleep(100000);  /* (pause() is not in every static flavor) */
    case 3: return *(volatile int *)0;
    }
    return 0;
}
int cb_pre_patch(void) { return act(0); }
VZP_PRE_PATCH(cb_pre_patch)
void cb_post_patch(void) { act(1); }
VZP_POST_PATCH(cb_post_patch)
int cb_pre_unpatch(void) { return act(2); }
VZP_PRE_UNPATCH(cb_pre_unpatch)
void cb_post_unpatch(void) { act(3); }
VZP_POST_UNPATCH(cb_post_unpatch)
''',
    "shadow1": '#include "vzp.h"\n' + _ITEM + _COUNT +
               "long item_value(struct item *it) { count_call(it); return it->value + 1000; }\n",
    "shadow2": '#include "vzp.h"\n' + _ITEM + _COUNT +
               "long item_value(struct item *it) { count_call(it); return it->value + 2000; }\n",
    "shadowfree": '#include "vzp.h"\n' + _ITEM + _COUNT +
                  "long item_value(struct item *it) { count_call(it); return it->value + 1000; }\n"
                  "void free_tallies(void) { vzp_shadow_free_all(1, 0); }\n"
                  "VZP_POST_UNPATCH(free_tallies)\n",
}

EXE_FLAGS = ["-g", "-pthread"]


def build_flavor(name):
    return cbuild.build_flavor(name, TARGET_C, MAIN_C, "cblive", EXE_FLAGS, ["-g", "-fPIC", "-shared"])


def patch_for(flavor, patch):
    """The live patch ``patch`` bound to ``flavor``'s target (built and generated once, cached).

    item_value's callers are the workers in main.c, another unit: no IPA assumption to follow."""
    return bind_patch(flavor.target, [(patch + ".c", PATCHES[patch])], "%s-cblive-%s.so" % (patch, flavor.name))


class Running(Target):
    """The target of a flavor, started and ready."""

    def __init__(self, flavor):
        self.flavor = flavor
        super().__init__([flavor.exe], ready_line="ready", timeout=20)

    def stat(self):
        p = self.ask("stat").split()
        return {"plain": int(p[1]), "p1": int(p[3]), "p2": int(p[5]), "bad": int(p[7]),
                "ran": [int(x) for x in p[9:13]]}

    def mode(self, kind, mode):
        assert self.ask("mode %d %d" % (kind, mode)) == "ok"

    def items(self):
        """[(address, patched calls)] per item."""
        p = self.ask("items").split()[1:]
        return list(zip((int(x) for x in p[:16]), (int(x) for x in p[16:])))

    def pause(self):
        assert self.ask("pause", timeout=20) == "paused"

    def resume(self):
        assert self.ask("resume") == "resumed"

    def grows(self, key, more=200, timeout=10.0):
        """The workers' tally ``key`` grows by ``more`` within ``timeout`` (the value is live)."""
        import time
        start = self.stat()[key]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.stat()[key] >= start + more:
                return True
            time.sleep(0.05)
        return False
