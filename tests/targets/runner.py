"""Target and patch for the runner tests (tests/test_runner*.py).

The target has two replaceable functions: ``compute(x)`` answers
``base_value + x`` and ``scale(x)`` answers ``scale_factor*x`` (2); the patch answers
``base_value + x + 500`` and ``3*x``, so each state of each function shows a
distinct value (and a patch bound to the wrong ``base_value`` shows a wrong
number).  Two worker threads call both functions all the time.

Line protocol on stdin/stdout:
  v       -> "v C S"      compute(1) and scale(1) as the main thread sees them
  park    -> "parked"     a thread now sleeps inside compute() until unpark
  unpark  -> "unparked"
"""

from .cbuild import bind_patch, build
from .process import Target, load_bias

TARGET_SOURCE = r'''
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int base_value = 1000;
static volatile int parked;

__attribute__((noinline)) int compute(int x)
{
    if (x < 0) {
        struct timespec ms = {0, 1000 * 1000};
        while (parked)
            nanosleep(&ms, NULL);
    }
    return base_value + x;
}

static int scale_factor = 2;

__attribute__((noinline)) int scale(int x)
{
    return scale_factor * x;
}

static void *worker(void *arg)
{
    (void)arg;
    volatile int sink;
    for (;;) {
        sink = compute(1) + scale(1);
        usleep(1000);
    }
    return NULL;
}

static void *parker(void *arg)
{
    (void)arg;
    compute(-1);
    return NULL;
}

int main(void)
{
    pthread_t t[2];
    char line[64];
    setvbuf(stdout, NULL, _IOLBF, 0);
    for (long i = 0; i < 2; i++)
        pthread_create(&t[i], NULL, worker, NULL);
    printf("ready %d\n", (int)getpid());
    while (fgets(line, sizeof line, stdin)) {
        if (!strcmp(line, "v\n"))
            printf("v %d %d\n", compute(1), scale(1));
        else if (!strcmp(line, "park\n")) {
            pthread_t p;
            parked = 1;
            pthread_create(&p, NULL, parker, NULL);
            usleep(50 * 1000);
            printf("parked\n");
        } else if (!strcmp(line, "unpark\n")) {
            parked = 0;
            printf("unparked\n");
        } else
            printf("? %s", line);
    }
    return 0;
}
'''

PATCH_SOURCE = r'''
#include "vzp.h"

VZP_FILE("target.c");
VZP_STATIC_VAR_REF(int, base_value);

int compute(int x)
{
    return base_value + x + 500;
}

int scale(int x)
{
    return 3 * x;
}
'''

ORIGINAL = "v 1001 2"
PATCHED = "v 1501 3"
TARGET_FLAGS = ["-O2", "-flive-patching=inline-clone", "-g", "-pthread", "-fPIE", "-pie"]


def build_target(variant=""):
    """The compiled target; a non-empty ``variant`` gives another build (other build-id), same name."""
    return build([("target.c", TARGET_SOURCE + variant)], TARGET_FLAGS, "target")


def make_patch(target, workdir, name="patch.so"):
    """A live patch for ``target`` in ``workdir``: the cached .so copied, then bound to ``target``."""
    return bind_patch(target, [("patch.c", PATCH_SOURCE)], name, workdir=workdir)


def start(target):
    """A running target, ready for the line protocol."""
    return Target([target], ready_line="ready")


def entries(target, pid):
    """{function: entry address} of compute and scale in the running ``target``."""
    from gdb_nsb.elf.image import ElfImage
    bias = load_bias(pid, target)
    return {s.name: bias + s.value for s in ElfImage(target).symtab if s.name in ("compute", "scale")}
