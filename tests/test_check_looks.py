"""`check` tells the truth about applicability (issue 16 item 4).

A worker spends about 70% of its time inside ``spin()``, which the patch
replaces.  One look at the stacks (what check used to answer from) finds it
inside most of the time: "busy at this instant", exit 3.  By default check
looks again at later moments, the process running untraced in between
(``process/reattach``), as an apply retries; it answers "could be applied
now" (2), and an apply indeed succeeds.  test_passive keeps check passive.
"""

import pytest

import targets as T

pytestmark = [pytest.mark.gdb, pytest.mark.timeout(300)]

TARGET_C = r'''
#include <pthread.h>
#include <stdio.h>
#include <time.h>

int base_value = 1;

static long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000L + ts.tv_nsec;
}

__attribute__((noinline)) int spin(int x)
{
    long end = now_ns() + 700 * 1000;
    while (now_ns() < end)
        ;
    return base_value + x;
}

static void *worker(void *arg)
{
    (void)arg;
    volatile int sink;
    for (;;) {
        sink = spin(1);
        long end = now_ns() + 300 * 1000;
        while (now_ns() < end)
            ;
    }
    return NULL;
}

int main(void)
{
    pthread_t t;
    char line[64];
    setvbuf(stdout, NULL, _IOLBF, 0);
    pthread_create(&t, NULL, worker, NULL);
    printf("ready\n");
    while (fgets(line, sizeof line, stdin))
        printf("value %d\n", spin(0) - 1 + 1);
    return 0;
}
'''

PATCH_C = "extern int base_value;\nint spin(int x) { return base_value + x + 100; }\n"


def _check(pid, patch, *extra):
    run = T.nsb("check", "-p", pid, "-f", patch, *extra, "--json", "--timeout", 90)
    doc = T.only_process(run.doc)
    return run.returncode, doc["message"]


def test_tight_loop_check_looks_again_and_answers_applicable(tmp_path):
    target = T.build([("spin.c", TARGET_C)], ["-O2", "-flive-patching=inline-clone", "-g", "-pthread", "-fPIE",
                                              "-pie"], "spin-target")
    patch = T.bind_patch(target, [("spin_patch.c", PATCH_C)], "spin-patch.so", workdir=tmp_path)
    with T.Target([target], ready_line="ready", timeout=20) as t:
        # One look (what check answered from before): inside spin most of the time.
        single = []
        while len(single) < 8 and not any(rc == 3 for rc, _ in single):
            single.append(_check(t.pid, patch, "--retries", "1"))
        assert {rc for rc, _ in single} <= {2, 3}, single
        busy = [m for rc, m in single if rc == 3]
        assert busy, single
        assert all("busy at this instant" in m and "spin" in m for m in busy), busy
        # Looking again at later moments: the answer an apply would give.
        for _ in range(2):
            rc, message = _check(t.pid, patch)
            assert rc == 2 and "could be applied now" in message, (rc, message)
            assert T.wait_running(t.pid, 10), T.thread_states(t.pid)
        run = T.nsb("patch", "-p", t.pid, "-f", patch, "--json", "--timeout", 90)
        assert run.returncode == 0, run.doc
        assert t.ask("x") == "value 101"
