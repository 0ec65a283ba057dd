"""A small live-patching scenario for the remote, dlopen, fork and replaced-executable tests.

The target (``compute``) answers ``base_value + 2*x``; the patch answers
``base_value + 2*x + 500``, so the patched value depends on the target's own
variable (a patch bound to the wrong object shows a wrong number).  Worker
threads call ``compute`` all the time and count any value that is neither the old nor
the new answer.

Line protocol on stdin/stdout:
  v             -> "v N"        compute(1) as the main thread sees it
  base N        -> "base N"     set base_value
  bad           -> "bad B C"    values seen by the workers that are neither base+2 nor base+502, calls made
  park / unpark -> a thread parks inside compute (x == 0 spins while parked)
  fork          -> "child PID"  a forked child that keeps serving the same protocol on a FIFO pair
  pid           -> "pid P"
"""

from .cbuild import bind_patch, build
from .process import Target

TARGET_SOURCE = r'''
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <signal.h>

int base_value = 1000;
volatile int parked;
static volatile long calls, unexpected;

__attribute__((noinline)) int compute(int x)
{
    if (x == 0)
        while (parked)
            __asm__ volatile("pause");
    return base_value + 2 * x;
}

static void *worker(void *arg)
{
    (void)arg;
    for (;;) {
        int b0 = base_value;
        int v = compute(1);
        int b1 = base_value;
        /* unpatched: base + 2, patched: base + 502; base may change around the call */
        if (v != b0 + 2 && v != b0 + 502 && v != b1 + 2 && v != b1 + 502)
            __atomic_add_fetch(&unexpected, 1, __ATOMIC_SEQ_CST);
        __atomic_add_fetch(&calls, 1, __ATOMIC_SEQ_CST);
        usleep(1000);
    }
    return NULL;
}

static void *parker(void *arg)
{
    (void)arg;
    compute(0);
    return NULL;
}

static void serve(FILE *in, FILE *out)
{
    char line[128];
    while (fgets(line, sizeof line, in)) {
        long a;
        if (!strncmp(line, "v", 1) && (line[1] == '\n' || line[1] == 0))
            fprintf(out, "v %d\n", compute(1));
        else if (sscanf(line, "base %ld", &a) == 1) {
            base_value = (int)a;
            fprintf(out, "base %ld\n", a);
        } else if (!strncmp(line, "bad", 3))
            fprintf(out, "bad %ld %ld\n", unexpected, calls);
        else if (!strncmp(line, "unpark", 6)) {
            parked = 0;
            fprintf(out, "unparked\n");
        } else if (!strncmp(line, "park", 4)) {
            pthread_t t;
            parked = 1;
            pthread_create(&t, NULL, parker, NULL);
            usleep(20000);
            fprintf(out, "parked\n");
        } else if (sscanf(line, "ignore %ld", &a) == 1) {
            /* a server's usual SIGPIPE ignore: remote run windows end with an ignored signal */
            signal((int)a, SIG_IGN);
            fprintf(out, "ignored %ld\n", a);
        } else if (!strncmp(line, "pid", 3))
            fprintf(out, "pid %d\n", (int)getpid());
        else if (!strncmp(line, "fork ", 5)) {
            /* fork DIR: the child serves DIR/in -> DIR/out (FIFOs made by the test) */
            char dir[100], pin[128], pout[128];
            sscanf(line + 5, "%99s", dir);
            snprintf(pin, sizeof pin, "%s/in", dir);
            snprintf(pout, sizeof pout, "%s/out", dir);
            fflush(out);
            pid_t c = fork();
            if (c == 0) {
                pthread_t t;
                pthread_create(&t, NULL, worker, NULL);
                FILE *ci = fopen(pin, "r"), *co = fopen(pout, "w");
                if (!ci || !co) _exit(3);
                setvbuf(co, NULL, _IOLBF, 0);
                fprintf(co, "child %d\n", (int)getpid());
                serve(ci, co);
                _exit(0);
            }
            fprintf(out, "forked %d\n", (int)c);
        } else
            fprintf(out, "? %s", line);
        fflush(out);
    }
}

int main(void)
{
    pthread_t t[2];
    setvbuf(stdout, NULL, _IOLBF, 0);
    for (long i = 0; i < 2; i++)
        pthread_create(&t[i], NULL, worker, NULL);
    printf("ready %d\n", (int)getpid());
    serve(stdin, stdout);
    return 0;
}
'''

PATCH_SOURCE = r'''
extern int base_value;

int compute(int x)
{
    return base_value + 2 * x + 500;
}
'''

TARGET_FLAGS = ["-O2", "-flive-patching=inline-clone", "-g", "-pthread", "-fPIE", "-pie"]


def build_target(variant="", flags=TARGET_FLAGS, name="target"):
    """The compiled target; ``variant`` is C text appended (a different build, same behaviour)."""
    return build([("target.c", TARGET_SOURCE + variant)], list(flags), name)


def make_patch(target, workdir, source=PATCH_SOURCE, name="patch.so"):
    """A live patch for ``target`` in ``workdir`` (the cached .so copied, then bound)."""
    return bind_patch(target, [("patch.c", source)], name, workdir=workdir)


def start_target(path, **kw):
    return Target([path], ready_line="ready", **kw)


def value(target):
    line = target.ask("v")
    assert line.startswith("v "), line
    return int(line.split()[1])


def assert_no_bad_values(target):
    """The workers made calls and saw no value that is neither the old nor the new answer."""
    line = target.ask("bad")
    _, bad, calls = line.split()
    assert int(bad) == 0 and int(calls) > 0, line
