"""The patch-series target (issue 18): a call chain whose every link tells its generation.

``chain()`` = ``gen_a()`` = 100 * A + ``gen_b()``; ``gen_b()`` = 10 * B + ``gen_c()``;
``gen_c()`` = C + ``base_value`` (a target global, 1000 + pid-derived, below 1e6, so a patch bound to the wrong
object shows a wrong value).  The original code has A = B = C = 0.  Patches (each generated once
per flavor, cached):

* ``p1``: gen_a and gen_b at generation 1 (chain = base + 110);
* ``p2``: gen_c at generation 2, needs ``p1`` (VZP_NEEDS_PATCH) and provides state 1 version 1
  (chain = base + 112);
* ``p3``: cumulative, gen_a and gen_c at generation 3, provides state 1 version 1; gen_b is in no
  layer of it, so a replace of p1+p2 by p3 gives gen_b its original code back (chain = base + 303);
* ``p4``: gen_b at generation 4, needs state 1 (chain on top of p3 = base + 343);
* ``p1hook``: ``p1`` that also registers one of its own helpers in the target's ``hook`` pointer:
  code only that old patch has, which the program keeps calling;
* ``p1park``: ``p1`` that also changes ``park(fd)`` (a blocking read), which no other patch changes:
  a thread parked in it after the apply is inside code only that patch has (``check`` of a replace).

Worker threads call ``chain()`` (a few percent of their time) and count every value outside the
*allowed* set, which the test sets with ``allow V ...`` (values relative to base_value): while a
replace of p1+p2 by p3 runs, only +112 and +303 are allowed, so a chain that mixed an old link
with a new one (+103, +312, +302 ...) or passed through an intermediate state counts.
Commands: ``get`` -> ``value V`` (V - base); ``stat`` -> ``calls C mixed M last L hooks H``;
``allow V...`` -> ``allowed``; ``unhook`` -> ``unhooked``; ``park`` -> ``parked`` (a new thread
blocks in ``park()`` on a pipe); ``unpark`` -> ``unparked R`` (a byte written, the thread joined, R
what ``park`` returned: 1 from the target's code, 2 from ``p1park``'s).
"""


from . import cbuild
from .cbuild import bind_patch
from .process import Target, wait_progress

TARGET_C = r'''
#include <unistd.h>
int base_value = 1000;
int (*volatile hook)(void);

/* The barriers keep each call a call (no tail jump: a 2-byte function is too short to patch). */
#define LINK(x) ({ int v_ = (x); __asm__ volatile("" ::: "memory"); v_; })
__attribute__((noinline, noclone)) int gen_c(void) { return LINK(base_value) + 0; }
__attribute__((noinline, noclone)) int gen_b(void) { return 10 * 0 + LINK(gen_c()); }
__attribute__((noinline, noclone)) int gen_a(void) { return 100 * 0 + LINK(gen_b()); }
__attribute__((noinline, noclone)) int chain(void) { return LINK(gen_a()); }
__attribute__((noinline, noclone)) int park(int fd) { char c; return LINK((int)read(fd, &c, 1)) + 0; }
'''

MAIN_C = r'''
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

extern int base_value;
extern int (*volatile hook)(void);
int chain(void);
int park(int fd);

#define MAX_WORKERS 16
#define MAX_ALLOWED 8
static volatile long calls[MAX_WORKERS], mixed, last_bad, hooks;
static volatile int allowed[MAX_ALLOWED] = {0}, n_allowed = 1;
static long pause_ns = 200 * 1000;
static int park_fds[2] = {-1, -1};
static volatile int parking, park_result;
static pthread_t parked_thread;

static void *parker(void *arg)
{
    (void)arg;
    parking = 1;
    park_result = park(park_fds[0]);
    return NULL;
}

static void *worker(void *arg)
{
    long id = (long)arg;
    struct timespec pause = {0, pause_ns};
    for (;;) {
        int d = chain() - base_value, ok = 0;
        for (int i = 0; i < n_allowed; i++)
            ok |= allowed[i] == d;
        if (!ok) {
            __atomic_add_fetch(&mixed, 1, __ATOMIC_SEQ_CST);
            last_bad = d;
        }
        int (*h)(void) = hook;
        if (h)
            __atomic_add_fetch(&hooks, h(), __ATOMIC_RELAXED);
        calls[id]++;
        if (pause_ns)
            nanosleep(&pause, NULL);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    int workers = argc > 1 ? atoi(argv[1]) : 4;
    if (argc > 2) pause_ns = atol(argv[2]);
    if (workers > MAX_WORKERS) workers = MAX_WORKERS;
    setvbuf(stdout, NULL, _IOLBF, 0);
    /* Below 1e6: a non-PIE patch maps near 0x3f0000 (4.1e6), and a chain value in a live stack slot
       would then look like a pointer into it (the scan is conservative) and keep it mapped. */
    base_value = 1000 + (getpid() % 997) * 1000;
    pthread_t t;
    for (long i = 0; i < workers; i++)
        pthread_create(&t, NULL, worker, (void *)i);
    printf("ready base %d\n", base_value);
    char line[256];
    while (fgets(line, sizeof line, stdin)) {
        if (!strncmp(line, "get", 3)) {
            printf("value %d\n", chain() - base_value);
        } else if (!strncmp(line, "stat", 4)) {
            long c = 0;
            for (int i = 0; i < workers; i++) c += calls[i];
            printf("calls %ld mixed %ld last %ld hooks %ld\n", c, mixed, last_bad, hooks);
        } else if (!strncmp(line, "allow", 5)) {
            int vals[MAX_ALLOWED], n = 0, used;
            char *p = line + 5;
            while (n < MAX_ALLOWED && sscanf(p, "%d%n", &vals[n], &used) == 1) { p += used; n++; }
            n_allowed = 0;
            __atomic_thread_fence(__ATOMIC_SEQ_CST);
            for (int i = 0; i < n; i++) allowed[i] = vals[i];
            __atomic_thread_fence(__ATOMIC_SEQ_CST);
            n_allowed = n;
            usleep(20000); /* calls that began under the old set finish */
            mixed = 0;
            printf("allowed\n");
        } else if (!strncmp(line, "unpark", 6)) {
            if (write(park_fds[1], "x", 1) != 1) return 1;
            pthread_join(parked_thread, NULL);
            printf("unparked %d\n", park_result);
        } else if (!strncmp(line, "park", 4)) {
            if (park_fds[0] < 0 && pipe(park_fds)) return 1;
            parking = 0;
            pthread_create(&parked_thread, NULL, parker, NULL);
            while (!parking) usleep(1000);
            usleep(20000); /* it is in read() by now */
            printf("parked\n");
        } else if (!strncmp(line, "unhook", 6)) {
            hook = 0;
            usleep(20000);
            printf("unhooked\n");
        } else {
            printf("pong\n");
        }
    }
    return 0;
}
'''

GEN = r'''extern int base_value;
int gen_c(void);
int gen_b(void);
'''

PATCHES = {
    "p1": GEN + "int gen_b(void) { return 10 * 1 + gen_c(); }\n"
                "int gen_a(void) { return 100 * 1 + gen_b(); }\n",
    "p2": '#include "vzp.h"\nVZP_NEEDS_PATCH("{p1}");\nVZP_PROVIDES_STATE(1, 1);\n'
          + GEN + "int gen_c(void) { return base_value + 2; }\n",
    "p3": '#include "vzp.h"\nVZP_CUMULATIVE;\nVZP_PROVIDES_STATE(1, 1);\n'
          + GEN + "int gen_c(void) { return base_value + 3; }\n"
                  "int gen_a(void) { return 100 * 3 + gen_b(); }\n",
    "p4": '#include "vzp.h"\nVZP_NEEDS_STATE(1, 1);\n'
          + GEN + "int gen_b(void) { return 10 * 4 + gen_c(); }\n",
    "p1park": GEN + "#include <unistd.h>\n"
                    "int gen_b(void) { return 10 * 1 + gen_c(); }\n"
                    "int gen_a(void) { return 100 * 1 + gen_b(); }\n"
                    "int park(int fd) { char c; return (int)read(fd, &c, 1) + 1; }\n",
    "p1hook": GEN + "extern int (*volatile hook)(void);\n"
                    "static int p1_helper(void) { return 1; }\n"
                    "int gen_b(void) { return 10 * 1 + gen_c(); }\n"
                    "int gen_a(void) { hook = p1_helper; return 100 * 1 + gen_b(); }\n",
}
VALUE = {"orig": 0, "p1": 110, "p1p2": 112, "p3": 303, "p3p4": 343}

EXE_FLAGS = ["-flive-patching=inline-clone", "-g", "-pthread"]  # at -O2 (O0: -O0)
FLAVORS = ("pie", "nopie", "static", "shlib", "O0")


def build_flavor(name):
    return cbuild.build_flavor(name, TARGET_C, MAIN_C, "series", EXE_FLAGS, EXE_FLAGS + ["-fPIC", "-shared"],
                               files=("series_target.c", "series_main.c"))


def patch_for(flavor, name):
    """The live patch ``name`` bound to ``flavor``'s target (p2 names p1's build-id)."""
    text = PATCHES[name]
    if "{p1}" in text:
        from gdb_nsb.elf.livepatch import build_id_of
        text = text.replace("{p1}", build_id_of(patch_for(flavor, "p1")))
    return bind_patch(flavor.target, [(name + ".c", text)], "%s-%s.so" % (name, flavor.name))


class Running(Target):
    """The series target of a flavor, running ``workers`` threads that pause ``pause_ns`` between calls."""

    def __init__(self, flavor, workers=4, pause_ns=200000):
        self.flavor = flavor
        super().__init__([flavor.exe, workers, pause_ns], ready_line="ready base", timeout=20)

    def value(self):
        line = self.ask("get")
        assert line.startswith("value "), line
        return int(line.split()[1])

    def stats(self):
        p = self.ask("stat").split()
        return {"calls": int(p[1]), "mixed": int(p[3]), "last": int(p[5]), "hooks": int(p[7])}

    def allow(self, *values):
        assert self.ask("allow " + " ".join(str(v) for v in values)) == "allowed"

    def unhook(self):
        assert self.ask("unhook") == "unhooked"

    def park(self):
        assert self.ask("park") == "parked"

    def unpark(self):
        """What ``park`` returned: 1 (the target's code) or 2 (``p1park``'s)."""
        line = self.ask("unpark")
        assert line.startswith("unparked "), line
        return int(line.split()[1])

    def wait_calls(self, more=200, timeout=5.0):
        return wait_progress(self.stats, more, timeout)
