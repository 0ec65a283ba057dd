"""Shared fixtures of the engine tests: target flavors, their live patches, a running target.

The target (PIE, non-PIE, static, a shared library used by a PIE executable,
and an -O0 PIE) has:

* ``compute()`` = ``base_value + 1`` (base_value is a target global set at
  start from the pid, so a patch bound to the wrong object shows a wrong
  value); four worker threads call ``compute()`` then sleep 200 us, and
  count every value outside ``base_value + 1 + {0, 100, 200, 300}``;
* ``parked(x)``, which a "parker" thread enters on request and stays in
  (sleeping) until released: a thread inside a replaced function;
* a reader thread blocked in ``read()`` on a FIFO inside ``wait_input()``,
  called from ``reader_loop()`` (neither is replaced by any patch).

Main thread commands on stdin: ``get`` -> ``value V``; ``stat`` -> ``calls C
unexpected U bad B seen N0 N100 N200 N300`` (worker calls per delta seen);
``park`` -> ``parked``; ``unpark`` -> ``unparked V``; ``got?`` -> ``got N LAST``.

Live patches (each generated once per target, cached like the builds):
``plus100`` / ``plus200`` (compute + 100 / + 200), ``ifunc`` (compute + 300
through ``strlen`` and ``memcpy`` of the target's ``label`` "abc"),
``parked`` (replaces parked()).
"""


from . import cbuild
from .cbuild import FIFO_READER_C, bind_patch
from .process import CountingWorkers, Target, make_fifo, wait_progress, write_fifo

TARGET_C = r'''
#include <string.h>
#include <unistd.h>
int base_value = 1000;
char label[16] = "abc";
volatile int park_request, parked_inside;

/* No parameter: at -O0, `break compute` then lands right after `push rbp; mov rbp,rsp`,
   inside the 5 bytes of a jump. */
__attribute__((noinline)) int compute(void)
{
    return base_value + 1;
}

__attribute__((noinline)) int parked(int x)
{
    parked_inside = 1;
    while (park_request)
        usleep(1000);
    parked_inside = 0;
    return base_value + x;
}
'''

MAIN_C = r'''
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

extern int base_value;
extern volatile int park_request, parked_inside;
int compute(void);
int parked(int x);

#define WORKERS 4
static volatile long calls[WORKERS], unexpected, last_bad, park_result, seen[4];
''' + FIFO_READER_C + r'''

static void *worker(void *arg)
{
    long id = (long)arg;
    struct timespec pause = {0, 200 * 1000};
    for (;;) {
        int d = compute() - base_value - 1;
        if (d != 0 && d != 100 && d != 200 && d != 300) {
            __atomic_add_fetch(&unexpected, 1, __ATOMIC_SEQ_CST);
            last_bad = d + base_value + 1;
        } else {
            __atomic_add_fetch(&seen[d / 100], 1, __ATOMIC_RELAXED);
        }
        calls[id]++;
        nanosleep(&pause, NULL);
    }
    return NULL;
}

static void *parker(void *arg)
{
    (void)arg;
    for (;;) {
        if (park_request)
            park_result = parked(1);
        usleep(1000);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    pthread_t t;
    setvbuf(stdout, NULL, _IOLBF, 0); /* before the threads: the reader prints its errors */
    fifo = argv[1];
    base_value = 1000 + (getpid() % 9973) * 1000;
    for (long i = 0; i < WORKERS; i++)
        pthread_create(&t, NULL, worker, (void *)i);
    pthread_create(&t, NULL, parker, NULL);
    pthread_create(&t, NULL, reader_loop, NULL);
    printf("ready base %d\n", base_value);
    char line[128];
    while (fgets(line, sizeof line, stdin)) {
        if (!strncmp(line, "get", 3)) {
            printf("value %d\n", compute());
        } else if (!strncmp(line, "stat", 4)) {
            long c = 0;
            for (int i = 0; i < WORKERS; i++) c += calls[i];
            printf("calls %ld unexpected %ld bad %ld seen %ld %ld %ld %ld\n", c, unexpected, last_bad,
                   seen[0], seen[1], seen[2], seen[3]);
        } else if (!strncmp(line, "park", 4)) {
            park_request = 1;
            while (!parked_inside) usleep(1000);
            printf("parked\n");
        } else if (!strncmp(line, "unpark", 6)) {
            park_request = 0;
            while (parked_inside) usleep(1000);
            usleep(5000);
            printf("unparked %ld\n", park_result);
        } else if (!strncmp(line, "got?", 4)) {
            printf("got %ld %s\n", reads, last);
        } else {
            printf("pong\n");
        }
    }
    return 0;
}
'''

PATCHES = {
    "plus100": ("extern int base_value;\n"
                "int compute(void) { return base_value + 1 + 100; }\n", ()),
    "plus200": ("extern int base_value;\n"
                "int compute(void) { return base_value + 1 + 200; }\n", ()),
    # -fno-builtin: real calls to strlen/memcpy (IFUNCs in glibc), never inlined.
    "ifunc": ("#include <string.h>\n"
              "extern int base_value;\n"
              "extern char label[];\n"
              "int compute(void)\n"
              "{\n"
              "    char buf[16];\n"
              "    size_t n = strlen(label);\n"
              "    memcpy(buf, label, n + 1);\n"
              "    return base_value + 1 + 100 * (int)strlen(buf);\n"
              "}\n", ("-fno-builtin",)),
    "parked": ("#include <unistd.h>\n"
               "extern int base_value;\n"
               "extern volatile int park_request, parked_inside;\n"
               "int parked(int x)\n"
               "{\n"
               "    parked_inside = 1;\n"
               "    while (park_request)\n"
               "        usleep(1000);\n"
               "    parked_inside = 0;\n"
               "    return base_value + x + 100;\n"
               "}\n", ()),
}
DELTA = {"plus100": 100, "plus200": 200, "ifunc": 300, "parked": 0}

EXE_FLAGS = ["-g", "-pthread"]
FLAVORS = ("pie", "nopie", "static", "shlib", "O0")


def build_flavor(name):
    return cbuild.build_flavor(name, TARGET_C, MAIN_C, "target", EXE_FLAGS, ["-g", "-fPIC", "-shared"],
                               lib_name="libnsbt.so")


def patch_for(flavor, patch):
    """The live patch ``patch`` bound to ``flavor``'s target (built and generated once, cached)."""
    text, extra = PATCHES[patch]
    return bind_patch(flavor.target, [(patch + ".c", text)], "%s-%s.so" % (patch, flavor.name), extra=list(extra))


class Running(CountingWorkers, Target):
    """The target of a flavor, started with its FIFO; ``value()``, ``stats()``, ``feed()``."""

    def __init__(self, flavor, tmp_path):
        self.flavor = flavor
        self.fifo = make_fifo(tmp_path)
        super().__init__([flavor.exe, self.fifo], ready_line="ready base", timeout=20)
        self.base = None

    def __enter__(self):
        super().__enter__()
        # Target.__enter__ consumed the ready line; the base is in /proc via a "get" instead.
        self.base = self.value() - 1
        return self

    def value(self):
        line = self.ask("get")
        assert line.startswith("value "), line
        return int(line.split()[1])

    def stats(self):
        parts = self.ask("stat").split()
        return {"calls": int(parts[1]), "unexpected": int(parts[3]), "bad": int(parts[5]),
                "seen": {100 * i: int(v) for i, v in enumerate(parts[7:11])}}

    def expect(self, delta):
        """The value compute() gives with the layer of ``delta`` on top."""
        return self.base + 1 + delta

    def feed(self, text):
        write_fifo(self.fifo, text + "\n")

    def wait_calls(self, more=200, timeout=5.0):
        """Let the workers run at least ``more`` further calls (they run through every step)."""
        return wait_progress(self.stats, more, timeout)
