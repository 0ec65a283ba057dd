"""A target that floods itself with signals (issue 14, item 4).

When every thread holds or has queued a signal no injected system call can
run (syscalls.SignalsHeld).  That is a busy outcome: nothing is written, the
process runs (its signals delivered) and the next safe point tries again;
exit 3, naming the reason, when the tries run out.  Never exit 10.
"""

import pytest
import targets as T
from targets import Target


pytestmark = pytest.mark.gdb

TARGET_C = r'''
#define _GNU_SOURCE
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int base_value = 1;
volatile long handled;

__attribute__((noinline)) int compute(int x) { return base_value + x; }

static void on_usr1(int sig) { (void)sig; handled++; }

/* Every thread, the main one included, sends each thread SIGUSR1 (thread-directed) in a tight loop:
   stopped at any moment, each most likely holds one or has one queued. */
#define N 4
static volatile pid_t tids[N];

static void flood_once(void)
{
    for (int i = 0; i < N; i++)
        if (tids[i])
            tgkill(getpid(), tids[i], SIGUSR1);
}

static void *flood(void *arg)
{
    tids[(long)arg] = gettid();
    for (;;)
        flood_once();
    return NULL;
}

int main(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGUSR1, &sa, NULL);
    sigaction(SIGUSR2, &sa, NULL);      /* only the test sends it (not blocked inside the USR1 handler) */
    pthread_t t[N];
    tids[0] = gettid();
    for (long i = 1; i < N; i++)
        pthread_create(&t[i], NULL, flood, (void *)i);
    printf("ready %d\n", compute(1));
    fflush(stdout);
    char line[64];
    for (;;) {
        flood_once();
        struct pollfd p = {0, POLLIN, 0};
        if (poll(&p, 1, 0) == 1) {      /* never blocks: the main thread floods as well */
            if (!fgets(line, sizeof line, stdin))
                return 0;
            printf("value %d handled %ld\n", compute(1), handled);
            fflush(stdout);
        }
    }
}
'''

PATCH_C = "extern int base_value;\nint compute(int x) { return base_value + x + 100; }\n"


def _target():
    return T.build([("flood.c", TARGET_C)], ["-O2", "-flive-patching=inline-clone", "-g", "-pthread",
                                                  "-fPIE", "-pie"], "flood-target")


def _patch(tmp_path):
    return T.bind_patch(_target(), [("flood_patch.c", PATCH_C)], "flood-patch.so", workdir=tmp_path)


SESSION = r'''
import gdb, json
from gdb_nsb import errors
from gdb_nsb.process import engine
from gdb_nsb.process.inferior import Inferior
from gdb_nsb.process.syscalls import SyscallInjector
inf = Inferior()
inj = SyscallInjector(inf)
if QUEUE:
    # Make sure: a signal queued for each stopped thread (the flood does this most of the time).  Two,
    # since a thread stopped inside its SIGUSR1 handler blocks SIGUSR1 there.
    import ctypes, signal
    libc = ctypes.CDLL(None, use_errno=True)
    for t in inf.threads():
        for sig in (signal.SIGUSR1, signal.SIGUSR2):
            libc.syscall(234, inf.pid, Inferior.tid(t), int(sig))
held = sum(1 for t in inf.threads() if not inj.clean(t))
out = {"threads": len(inf.threads()), "held": held}
for op, call in (("apply", lambda: engine.apply(PATCH, engine.Options(retries=RETRIES))),
                 ("revert", lambda: engine.revert(PATCH, engine.Options(retries=6)))):
    try:
        res = call()
        out[op] = [res.code, res.message]
    except errors.NsbError as e:
        out[op] = [e.exit_code, str(e)]
    if out[op][0] != 0:
        break
print("NSB-RESULT: " + json.dumps(out))
'''


def _value(t):
    parts = t.ask("get").split()
    assert parts[0] == "value", parts
    return int(parts[1])


@pytest.mark.timeout(600)
def test_signal_flood_ends_applied_or_busy_never_10(tmp_path):
    """Attached by GDB, the flood's threads stop most of them holding a SIGUSR1; the test queues one more
    for each (so that every thread has one, each time): apply's first injected call finds no thread.
    It must end applied (0: the process ran, its signals delivered, the next safe point worked) or busy
    (3), never 10."""
    from targets import run_gdb
    p = _patch(tmp_path)
    seen = []
    with Target([_target()], ready_line="ready", timeout=20) as t:
        for queue in (True, False, True):
            res = run_gdb(t.pid, python=SESSION.replace("PATCH", repr(p)).replace("QUEUE", repr(queue))
                          .replace("RETRIES", "6"), timeout=240)
            assert res.results, res
            r = res.results[0]
            code, msg = r["apply"]
            assert code in (0, 3), r
            assert t.alive()
            if queue:
                assert r["held"] == r["threads"], r  # the case of the issue: no thread can run a call
            if code == 3:
                assert "every thread holds or has queued a signal" in msg or "no safe point" in msg, msg
                assert _value(t) == 2  # nothing written
            else:
                assert r["revert"][0] in (0, 3), r
                assert _value(t) == (2 if r["revert"][0] == 0 else 102)
                if r["revert"][0] == 3:
                    break
            seen.append("%d of %d threads held a signal at attach: apply %d%s" % (
                r["held"], r["threads"], code, ", revert %d" % r["revert"][0] if "revert" in r else ""))
        assert t.alive()
    print("signal flood: " + "; ".join(seen))


@pytest.mark.timeout(300)
def test_signal_flood_with_one_try_is_busy_with_the_reason(tmp_path):
    """No try left after the first: exit 3 naming the signals, nothing written."""
    from targets import run_gdb
    p = _patch(tmp_path)
    with Target([_target()], ready_line="ready", timeout=20) as t:
        res = run_gdb(t.pid, python=SESSION.replace("PATCH", repr(p)).replace("QUEUE", "True")
                      .replace("RETRIES", "1"), timeout=240)
        assert res.results, res
        r = res.results[0]
        assert r["held"] == r["threads"], r
        code, msg = r["apply"]
        assert code == 3 and "every thread holds or has queued a signal" in msg and "(1 try)" in msg, r
        assert t.alive() and _value(t) == 2
