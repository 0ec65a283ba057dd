"""The thread a callback borrows is not inside the allocator or the shadow variables' lock (issue 19 item 1: a
thread that is itself inside the allocator or a lock the callback needs must not deadlock it).

The target's main thread (thread 1, the one a callback used to borrow) allocates and frees 4 KiB blocks in a
loop: beyond the tcache, so every call takes its arena's lock.  A GDB session stops it at ``_int_malloc``
(arena lock held) and applies a patch whose pre-patch callback allocates 4 KiB.  Borrowing thread 1 there, the
callback would wait for the lock its own thread holds until its time limit; another thread runs it at once, and
thread 1, running while the call does, finishes its malloc.  The same for the shadow variables' one lock: a
thread stopped inside a patch's ``vzp_shadow_get_or_alloc`` holds it, and a callback using shadow variables
(``vzp_shadow_free_all`` in post-unpatch is the kernel's pattern) needs it.
"""

import re

import pytest

import targets as T

pytestmark = [pytest.mark.gdb, pytest.mark.timeout(300)]

TARGET_C = r'''
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

volatile long rounds;
long objects[4];

__attribute__((noinline)) long touch(long *obj)
{
    __asm__ volatile("nop\n\tnop\n\tnop\n\tnop");   /* long enough for a jump */
    return *obj;
}

__attribute__((noinline)) long rounds_done(void)
{
    __asm__ volatile("");
    return rounds;
}

static void *idle(void *arg)
{
    (void)arg;
    for (;;)
        pause();
    return NULL;
}

int main(void)
{
    pthread_t t;
    setvbuf(stdout, NULL, _IOLBF, 0);
    pthread_create(&t, NULL, idle, NULL);
    printf("ready\n");
    for (;;) {
        void *volatile p = malloc(4096);
        free(p);
        touch(&objects[rounds & 3]);
        rounds++;
    }
}
'''

PATCH_C = r'''
#include <stdlib.h>
#include "vzp.h"

extern volatile long rounds;

long rounds_done(void) { return rounds + 1000000000L; }

int allocating_pre_patch(void)
{
    void *volatile p = malloc(4096);
    if (!p)
        return 1;
    free(p);
    return 0;
}
VZP_PRE_PATCH(allocating_pre_patch)
'''


def test_a_callback_does_not_borrow_a_thread_inside_the_allocator(tmp_path):
    target = T.build([("allocloop.c", TARGET_C)], ["-O2", "-flive-patching=inline-clone", "-g", "-pthread", "-fPIE",
                                                   "-pie"], "allocloop")
    patch = T.bind_patch(target, [("allocloop_fix.c", PATCH_C)], "allocloop-fix.so", workdir=tmp_path)
    with T.Target([target], ready_line="ready", timeout=20) as t:
        r = T.run_gdb(t.pid, timeout=120, commands=[
            "break _int_malloc thread 1", "continue", "delete", "echo ==stopped-in==\\n", "bt 2",
            "set nsb run-windows on", "set nsb callback-timeout 3", "nsb-patch %s" % patch,
            "echo ==after==\\n", "thread 1", "bt 2"])
        out = r.stdout + r.stderr
        stopped = out[out.index("==stopped-in=="):]
        assert re.search(r"^#0 .*_int_malloc", stopped, re.M), out  # the thread held its arena's lock there
        assert "applied to allocloop" in out and "timed out" not in out, out
        assert T.wait_running(t.pid, 10)


COUNTING_C = r'''
#include "vzp.h"

long touch(long *obj)
{
    long *n = vzp_shadow_get_or_alloc(obj, 1, sizeof *n, NULL, NULL);
    if (n)
        __atomic_add_fetch(n, 1, __ATOMIC_RELAXED);
    return *obj;
}
'''

READING_C = r'''
#include "vzp.h"

extern long objects[4];
extern volatile long rounds;

long rounds_done(void) { return rounds + 2000000000L; }

int reading_pre_patch(void)
{
    return vzp_shadow_get(&objects[0], 1) ? 0 : 1;   /* takes the region's lock */
}
VZP_PRE_PATCH(reading_pre_patch)
'''


def test_a_callback_does_not_borrow_a_thread_holding_the_shadow_lock(tmp_path):
    target = T.build([("allocloop.c", TARGET_C)], ["-O2", "-flive-patching=inline-clone", "-g", "-pthread", "-fPIE",
                                                   "-pie"], "allocloop")
    counting = T.bind_patch(target, [("counting.c", COUNTING_C)], "counting.so", workdir=tmp_path)
    reading = T.bind_patch(target, [("reading.c", READING_C)], "reading.so", workdir=tmp_path)
    with T.Target([target], ready_line="ready", timeout=20) as t:
        r = T.nsb("patch", "-p", t.pid, "-f", counting, "--timeout", "60", timeout=120)
        assert r.returncode == 0, r.stderr
        # vzp__find runs with the region's lock held (the patch's own static function, -O0: not inlined).
        r = T.run_gdb(t.pid, timeout=120, commands=[
            "break vzp__find thread 1", "continue", "delete", "echo ==stopped-in==\\n", "bt 3",
            "set nsb run-windows on", "set nsb callback-timeout 3", "nsb-patch %s" % reading])
        out = r.stdout + r.stderr
        stopped = out[out.index("==stopped-in=="):]
        assert re.search(r"^#1 .*vzp_shadow_get_or_alloc", stopped, re.M), out
        assert "applied to allocloop" in out and "timed out" not in out, out
        assert T.wait_running(t.pid, 10)


HELD_C = r'''
#define _GNU_SOURCE
#include <link.h>
#include <stdio.h>
#include <unistd.h>

volatile long rounds;

__attribute__((noinline)) long rounds_done(void)
{
    __asm__ volatile("nop\n\tnop\n\tnop\n\tnop");
    return rounds;
}

static int wait_forever(struct dl_phdr_info *info, size_t size, void *data)
{
    (void)info, (void)size, (void)data;
    for (;;)
        pause();
    return 0;
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("ready\n");
    return dl_iterate_phdr(wait_forever, NULL);   /* the loader's lock held for good */
}
'''

QUIET_C = r'''
#include "vzp.h"

long rounds_done(void) { return 7; }

int quiet_pre_patch(void) { return 0; }   /* needs no lock */
VZP_PRE_PATCH(quiet_pre_patch)
'''


def test_a_thread_that_never_leaves_a_lock_holder_is_borrowed_after_the_looks(tmp_path):
    """The only thread waits inside dl_iterate_phdr for good: after its looks the tool borrows it all the same
    (a callback that needs no lock runs), rather than failing the operation busy."""
    target = T.build([("held.c", HELD_C)], ["-O2", "-flive-patching=inline-clone", "-g", "-fPIE", "-pie"], "held")
    patch = T.bind_patch(target, [("quiet.c", QUIET_C)], "quiet.so", workdir=tmp_path)
    with T.Target([target], ready_line="ready", timeout=20) as t:
        r = T.nsb("patch", "-p", t.pid, "-f", patch, "--timeout", "60", timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        assert T.wait_running(t.pid, 10)
