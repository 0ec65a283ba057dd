"""Stopping, run windows and the safe-point loop on real targets, each in its own GDB."""

import json
import re

import pytest

import targets as T
from targets import Target, run_gdb, thread_states, wait_running

pytestmark = pytest.mark.timeout(180)

SRC = r'''
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/syscall.h>

volatile int park, hmode, cpark;
volatile long spin, handled, sent, sigseen;
volatile pid_t worker_tid, cold_tid;

__attribute__((noinline)) void busy_fn(void) { while (park) spin++; }
__attribute__((noinline)) void handler_busy(void) { while (hmode == 2) spin++; }
__attribute__((noinline, cold)) void cold_wait(void) { while (cpark) spin++; }
__attribute__((noinline)) long cold_fn(long x) {
  long r = 0;
  for (long i = 0; i < x; i++) r += spin * i;
  if (x < 0) { cold_wait(); r += spin * 5; spin = r; }
  return r + spin;
}
static void on_usr1(int s) { (void)s; handled++; }
static void on_usr2(int s) { (void)s; if (hmode == 1) { while (hmode == 1) spin++; } else if (hmode == 2) handler_busy(); }

static void *worker(void *a) { (void)a; worker_tid = gettid();
  for (;;) { if (park) busy_fn(); usleep(200); } }
static void *idle(void *a) { (void)a; for (;;) pause(); }
static void *sigwaiter(void *a) { (void)a; sigset_t s; sigemptyset(&s);
  sigaddset(&s, SIGINT); sigaddset(&s, SIGTERM); sigaddset(&s, SIGHUP); sigaddset(&s, SIGQUIT);
  for (;;) { int sig; if (sigwait(&s, &sig) == 0) sigseen++; } }
static void *storm(void *a) { long n = (long)a;
  for (long i = 0; i < n; i++) { long want = handled + 1; syscall(SYS_tgkill, getpid(), worker_tid, SIGUSR1); sent++;
    while (handled < want) usleep(20); }
  return 0; }
static void *coldthr(void *a) { (void)a; cold_tid = gettid(); spin += cold_fn(-1); return 0; }

int main(int argc, char **argv) {
  sigset_t s; sigemptyset(&s);
  sigaddset(&s, SIGINT); sigaddset(&s, SIGTERM); sigaddset(&s, SIGHUP); sigaddset(&s, SIGQUIT);
  pthread_sigmask(SIG_BLOCK, &s, 0);
  struct sigaction sa; memset(&sa, 0, sizeof sa); sa.sa_handler = on_usr1; sa.sa_flags = SA_RESTART; sigaction(SIGUSR1, &sa, 0);
  sa.sa_handler = on_usr2; sigaction(SIGUSR2, &sa, 0);
  pthread_t t;
  pthread_create(&t, 0, worker, 0); pthread_create(&t, 0, sigwaiter, 0);
  int extra = argc > 1 ? atoi(argv[1]) : 0;
  for (int i = 0; i < extra; i++) pthread_create(&t, 0, idle, 0);
  while (!worker_tid) usleep(100);
  printf("ready\n"); fflush(stdout);
  char buf[128];
  while (fgets(buf, sizeof buf, stdin)) {
    long n = 0;
    if (!strncmp(buf, "park", 4)) { park = 1; while (1) { usleep(1000); break; } }
    else if (!strncmp(buf, "release", 7)) park = 0;
    else if (sscanf(buf, "hmode %ld", &n) == 1) hmode = n;
    else if (!strncmp(buf, "usr2", 4)) syscall(SYS_tgkill, getpid(), worker_tid, SIGUSR2);
    else if (sscanf(buf, "storm %ld", &n) == 1) pthread_create(&t, 0, storm, (void *)n);
    else if (!strncmp(buf, "cold", 4)) { cpark = 1; pthread_create(&t, 0, coldthr, 0); while (!cold_tid) usleep(100); }
    else if (!strncmp(buf, "uncold", 6)) cpark = 0;
    printf("ok handled=%ld sent=%ld sigseen=%ld spin=%d\n", handled, sent, sigseen, spin != 0); fflush(stdout);
  }
  return 0;
}
'''


def build():
    return T.build([("sp_target.c", SRC)], ["-O2", "-g", "-no-pie", "-fno-pie", "-pthread"], "sp_target")


def ranges(exe, *names):
    """Absolute [lo, hi) of symbols from nm -S (the fixture is non-PIE)."""
    out = {}
    for line in T.tool("nm", "-S", exe).splitlines():
        p = line.split()
        if len(p) == 4 and p[3] in names:
            out[p[3]] = (int(p[0], 16), int(p[0], 16) + int(p[1], 16))
    return out


def reply(t, cmd):
    line = t.ask(cmd)
    m = re.match(r"ok handled=(\d+) sent=(\d+) sigseen=(\d+)", line)
    assert m, line
    return {"handled": int(m.group(1)), "sent": int(m.group(2)), "sigseen": int(m.group(3))}


GDB_SCRIPT = '''
import gdb, json, time
from gdb_nsb.safepoint import SafePointCheck
from gdb_nsb.process import safepoint_wait
from gdb_nsb.errors import BusyError
busy = {k: [tuple(r) for r in v] for k, v in json.loads(%r).items()}
check = SafePointCheck(busy)
out = {}
t0 = time.monotonic()
try:
    v = safepoint_wait.wait_for_safe_point(check, strategy=%r, tries=%d, delays=%r)
    out["safe"] = True
except BusyError as e:
    out["safe"] = False
    out["error"] = str(e)
out["seconds"] = time.monotonic() - t0
print("NSB-RESULT:" + json.dumps(out))
'''


def safe_point(pid, busy, strategy="retry", tries=6, delays=(0.001, 0.002, 0.004, 0.008, 0.016)):
    r = run_gdb(pid, python=GDB_SCRIPT % (json.dumps(busy), strategy, tries, list(delays)), timeout=90)
    assert r.results, r
    return r.results[0]


def assert_running(t):
    assert wait_running(t.pid), thread_states(t.pid)
    assert t.alive()


@pytest.mark.parametrize("strategy", ["retry", "runout"])
def test_parked_thread_gives_up_then_succeeds(strategy):
    exe = build()
    busy = {"busy_fn": [ranges(exe, "busy_fn")["busy_fn"]]}
    with Target([exe], ready_line="ready") as t:
        reply(t, "park")
        res = safe_point(t.pid, busy, strategy)
        assert not res["safe"]
        assert "busy_fn" in res["error"] and "thread 2" in res["error"] and "frame #0" in res["error"], res
        assert_running(t)
        before = reply(t, "release")
        assert before["sigseen"] == 0
        res = safe_point(t.pid, busy, strategy)
        assert res["safe"], res
        assert_running(t)
        assert reply(t, "x")["sigseen"] == 0


def test_runout_waits_for_the_return():
    """The thread leaves busy_fn while run-out windows run: success within the same session."""
    exe = build()
    busy = {"busy_fn": [ranges(exe, "busy_fn")["busy_fn"]]}
    with Target([exe], ready_line="ready") as t:
        reply(t, "park")
        script = GDB_SCRIPT % (json.dumps(busy), "runout", 40, [0.05])
        # release from a timer inside the test while GDB loops
        import threading
        threading.Timer(1.5, lambda: t.send("release")).start()
        r = run_gdb(t.pid, python=script, timeout=90)
        assert r.results and r.results[0]["safe"], r
        assert_running(t)


def test_cold_fragment_is_unsafe():
    exe = build()
    rg = ranges(exe, "cold_fn", "cold_fn.cold")
    assert "cold_fn.cold" in rg, "gcc emitted no cold fragment"
    busy = {"cold_fn": [rg["cold_fn"], rg["cold_fn.cold"]]}
    with Target([exe], ready_line="ready") as t:
        reply(t, "cold")
        res = safe_point(t.pid, busy, tries=2)
        assert not res["safe"] and "cold_fn" in res["error"] and "frame #1" in res["error"], res
        assert_running(t)
        reply(t, "uncold")
        res = safe_point(t.pid, busy, tries=3)
        assert res["safe"], res
        assert_running(t)


def test_handler_frames():
    exe = build()
    rg = ranges(exe, "busy_fn", "handler_busy")
    with Target([exe], ready_line="ready") as t:
        # A handler (outside) interrupted busy_fn: unwinding passes the sigtramp and
        # finds busy_fn at its interrupted pc.
        reply(t, "hmode 1")
        reply(t, "park")
        reply(t, "usr2")
        res = safe_point(t.pid, {"busy_fn": [rg["busy_fn"]]}, tries=2)
        assert not res["safe"] and "busy_fn" in res["error"] and "frame #0" not in res["error"], res
        # ... while handler_busy is not on that stack: safe for a patch of it.
        res = safe_point(t.pid, {"handler_busy": [rg["handler_busy"]]}, tries=1)
        assert res["safe"], res
        reply(t, "release")
        reply(t, "hmode 0")
        assert_running(t)
        # A handler stopped inside a replaced function blocks.
        reply(t, "hmode 2")
        reply(t, "usr2")
        res = safe_point(t.pid, {"handler_busy": [rg["handler_busy"]]}, tries=2)
        assert not res["safe"] and "handler_busy" in res["error"], res
        reply(t, "hmode 0")
        res = safe_point(t.pid, {"handler_busy": [rg["handler_busy"]]}, tries=3)
        assert res["safe"], res
        assert_running(t)
