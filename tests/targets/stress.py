"""Shared fixtures of the reliability tests (faults, hostile input, load).

The target ``rtarget`` (PIE, -O2):

* ``compute(x)`` = ``base_value + x`` and ``scale(x)`` = ``2 * x + base_value``
  (base_value is set from the pid at start, so a patch bound to the wrong
  object shows a wrong value).  ``compute`` also parks (sleeps inside itself)
  while ``park_request`` is set and the caller is the parker thread: a
  thread inside a replaced function, which makes the safe-point loop run
  windows.
* N worker threads (argv[2], default 16) each loop: call compute and scale
  (a small share of the loop), check the values against every layer that may
  be on top ({0, 100} and {0, 1000}), spin outside, and every 64 rounds send
  themselves SIGUSR1 with tgkill and wait until their handler ran, so the
  handler count must equal the number sent exactly (never merged, never lost).
* mode argv[3]: ``plain``; ``spawn`` (a thread creating short-lived threads
  all the time); ``fork`` (a thread forking children that call compute and
  exit 0, counting children that did not); ``exec`` (on ``exec`` the main
  thread parks a worker in compute, waits for a tracer and 0.3 s more, and execs ``rtarget`` again
  in mode ``execd``, which prints nothing and just runs); ``exit`` (on
  ``exit`` park, wait for a tracer, then 0.3 s, exit 0).

Main thread commands on stdin: ``get`` -> ``value V W`` (compute(1), scale(1));
``stat`` -> ``calls C wrong W bad B sent S handled H spawned P forks F childbad K``;
``park`` -> ``parked``; ``unpark`` -> ``unparked``; ``exec``/``exit`` (see above).

Patches: ``plus`` (compute + 100), ``both`` (compute + 100 and scale + 1000), ``cumulative`` (compute
+ 100, replacing every patch applied).
"""

import os
import shutil
import time

from .cbuild import bind_patch, build
from .process import Target

TARGET_C = r'''
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int base_value = 1000;
volatile int park_request, parked_inside, parker_tid;

__attribute__((noinline)) int compute(int x)
{
    if (__builtin_expect(park_request && gettid() == parker_tid, 0)) {
        parked_inside = 1;
        while (park_request)
            usleep(1000);
        parked_inside = 0;
    }
    return base_value + x;
}

__attribute__((noinline)) int scale(int x)
{
    return 2 * x + base_value;
}

#define MAXW 64
static int nworkers = 16;
static volatile long calls[MAXW], sent[MAXW], handled[MAXW], wrong, bad, spawned, forks, childbad;
static __thread int my_index = -1;

static void on_usr1(int s)
{
    (void)s;
    if (my_index >= 0)
        __atomic_add_fetch(&handled[my_index], 1, __ATOMIC_SEQ_CST);
}

static void *worker(void *arg)
{
    long id = (long)arg;
    my_index = (int)id;
    pid_t tid = gettid();
    for (unsigned long round = 1;; round++) {
        int c = compute((int)id) - base_value - (int)id;
        int s = scale((int)id) - base_value - 2 * (int)id;
        if ((c != 0 && c != 100) || (s != 0 && s != 1000)) {
            __atomic_add_fetch(&wrong, 1, __ATOMIC_SEQ_CST);
            bad = (long)c * 100000 + s;
        }
        calls[id]++;
        for (volatile int i = 0; i < 2000; i++)
            ;
        if (round % 64 == 0) {
            __atomic_add_fetch(&sent[id], 1, __ATOMIC_SEQ_CST);
            syscall(SYS_tgkill, getpid(), tid, SIGUSR1);
            while (__atomic_load_n(&handled[id], __ATOMIC_SEQ_CST) != sent[id])
                sched_yield();
            usleep(100);
        }
    }
    return NULL;
}

static void *parker(void *arg)
{
    (void)arg;
    parker_tid = gettid();
    for (;;) {
        if (park_request)
            compute(0);
        usleep(1000);
    }
    return NULL;
}

static void *short_lived(void *arg)
{
    (void)arg;
    for (volatile int i = 0; i < 20000; i++)
        ;
    return NULL;
}

static void *spawner(void *arg)
{
    (void)arg;
    for (;;) {
        pthread_t t;
        if (pthread_create(&t, NULL, short_lived, NULL) == 0) {
            pthread_join(t, NULL);
            spawned++;
        }
        usleep(500);
    }
    return NULL;
}

static void *forker(void *arg)
{
    (void)arg;
    for (;;) {
        pid_t c = fork();
        if (c == 0) {
            int v = compute(1) - base_value - 1;
            _exit(v == 0 || v == 100 ? 0 : 1);
        }
        if (c > 0) {
            int st;
            waitpid(c, &st, 0);
            forks++;
            if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
                childbad++;
        }
        usleep(2000);
    }
    return NULL;
}

static int traced(void)
{
    char buf[4096];
    FILE *f = fopen("/proc/self/status", "r");
    int pid = 0;
    if (!f)
        return 0;
    while (fgets(buf, sizeof buf, f))
        if (!strncmp(buf, "TracerPid:", 10))
            pid = atoi(buf + 10);
    fclose(f);
    return pid != 0;
}

int main(int argc, char **argv)
{
    if (argc > 3 && !strcmp(argv[3], "execd")) {
        for (;;)
            pause();
    }
    if (argc > 2)
        nworkers = atoi(argv[2]);
    if (nworkers > MAXW)
        nworkers = MAXW;
    const char *mode = argc > 3 ? argv[3] : "plain";
    base_value = 1000 + (getpid() % 9973) * 1000;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGUSR1, &sa, NULL);
    pthread_t t;
    for (long i = 0; i < nworkers; i++)
        pthread_create(&t, NULL, worker, (void *)i);
    pthread_create(&t, NULL, parker, NULL);
    if (!strcmp(mode, "spawn"))
        pthread_create(&t, NULL, spawner, NULL);
    if (!strcmp(mode, "fork"))
        pthread_create(&t, NULL, forker, NULL);
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("ready base %d\n", base_value);
    char line[128];
    while (fgets(line, sizeof line, stdin)) {
        if (!strncmp(line, "get", 3)) {
            printf("value %d %d\n", compute(1), scale(1));
        } else if (!strncmp(line, "stat", 4)) {
            long c = 0, s = 0, h = 0;
            for (int i = 0; i < nworkers; i++) {
                c += calls[i];
                s += sent[i];
                h += handled[i];
            }
            printf("calls %ld wrong %ld bad %ld sent %ld handled %ld spawned %ld forks %ld childbad %ld\n",
                   c, wrong, bad, s, h, spawned, forks, childbad);
        } else if (!strncmp(line, "park", 4)) {
            park_request = 1;
            while (!parked_inside)
                usleep(1000);
            printf("parked\n");
        } else if (!strncmp(line, "unpark", 6)) {
            park_request = 0;
            while (parked_inside)
                usleep(1000);
            printf("unparked\n");
        } else if (!strncmp(line, "exec", 4) || !strncmp(line, "exit", 4)) {
            park_request = 1;
            while (!parked_inside)
                usleep(1000);
            printf("parked\n");
            while (!traced())
                usleep(1000);
            usleep(50 * 1000); /* inside the safe-point loop's run windows */
            if (line[1] == 'x' && line[2] == 'i')
                exit(0);
            char self[4096];
            ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
            self[n < 0 ? 0 : n] = 0;
            execl(self, self, "-", "0", "execd", (char *)NULL);
            _exit(9);
        } else {
            printf("pong\n");
        }
    }
    return 0;
}
'''

PATCHES = {
    "plus": "extern int base_value;\n"
            "int compute(int x) { return base_value + x + 100; }\n",
    # The new compute parks like the old one, so that a revert can meet a busy thread too.
    "both": "#define _GNU_SOURCE\n"
            "#include <unistd.h>\n"
            "extern int base_value;\n"
            "extern volatile int park_request, parked_inside, parker_tid;\n"
            "int compute(int x)\n"
            "{\n"
            "    if (park_request && gettid() == parker_tid) {\n"
            "        parked_inside = 1;\n"
            "        while (park_request)\n"
            "            usleep(1000);\n"
            "        parked_inside = 0;\n"
            "    }\n"
            "    return base_value + x + 100;\n"
            "}\n"
            "int scale(int x) { return 2 * x + base_value + 1000; }\n",
}
# A cumulative patch (an apply replaces every patch of the target): compute as in ``both``, scale back
# to the original's value.  After ``both``: compute switches to it, scale gets its original code back.
PATCHES["cumulative"] = PATCHES["both"].split("int scale")[0].replace(
    "#include <unistd.h>\n", '#include <unistd.h>\n#include "vzp.h"\nVZP_CUMULATIVE;\n').replace(
    "return base_value + x + 100;", "return base_value + x + 100; /* cumulative */")


def target():
    """Path of the built target (PIE, -O2, with debug info), cached per run."""
    return build([("rtarget.c", TARGET_C)], ["-O2", "-flive-patching=inline-clone", "-g", "-pthread", "-fPIE", "-pie"],
                 "rtarget")


def patch(name):
    """The live patch ``name`` bound to the target (generated once, cached; copy it before damaging it)."""
    return bind_patch(target(), [(name + ".c", PATCHES[name])], "r-" + name + ".so")


def copy_patch(name, directory, as_name=None):
    """A private copy of patch ``name`` in ``directory``."""
    dst = os.path.join(str(directory), as_name or (name + ".so"))
    shutil.copyfile(patch(name), dst)
    return dst


class RTarget(Target):
    """The running target; ``values()``, ``stats()``, ``park()``/``unpark()``."""

    def __init__(self, workers=16, mode="plain"):
        super().__init__([target(), "-", workers, mode], ready_line="ready base", timeout=20)
        self.base = None

    def __enter__(self):
        super().__enter__()
        self.base = self.values()[0] - 1
        return self

    def values(self):
        """(compute(1) - base - 1, scale(1) - base - 2) once base is known; raw values before."""
        line = self.ask("get")
        assert line.startswith("value "), line
        c, s = (int(v) for v in line.split()[1:3])
        if self.base is None:
            return c, s
        return c - self.base - 1, s - self.base - 2

    def stats(self):
        parts = self.ask("stat").split()
        return {parts[i]: int(parts[i + 1]) for i in range(0, len(parts), 2)}

    def park(self):
        assert self.ask("park") == "parked"

    def unpark(self):
        assert self.ask("unpark", timeout=20) == "unparked"

    def settle(self, timeout=20.0):
        """Wait until every sent signal was handled (the workers wait for theirs), then return stats.

        Returns as soon as they are equal; the bound is for a loaded machine (CI: a signal handled more
        than 5 s after it was sent, while the suite's other tests held both CPUs)."""
        deadline = time.monotonic() + timeout
        while True:
            s = self.stats()
            if s["sent"] == s["handled"] or time.monotonic() > deadline:
                return s
            time.sleep(0.005)


# What the layer of patch "both" adds to each function's value (compute(1) - base - 1, scale(1) - base - 2).
FUNCS = ("compute", "scale")
DELTA = {"compute": 100, "scale": 1000}


def whole_entries(t):
    """{function: 'original' | 'jump'} of the running target ``t``: every entry is whole (never torn) and each
    function's value matches its entry (asserted)."""
    from .process import entry_state
    values = dict(zip(FUNCS, t.values()))
    states = {}
    for f in FUNCS:
        st = entry_state(t.pid, target(), f)
        assert st in ("original", "jump"), "%s is torn: %s" % (f, st)
        assert values[f] == (DELTA[f] if st == "jump" else 0), (f, st, values)
        states[f] = st
    return states
