"""Callbacks and shadow variables on live processes (issue 19), through the runner and GDB.

The target (targets.cblive) waits in sigwait on its main thread, the thread a callback borrows, so any
signal of ours would show as a "GOT SIGNAL" line; a holder thread keeps the lock the callbacks take
most of the time, so a callback that ran with the other threads stopped would deadlock.  Callbacks that
succeed, refuse, block and crash, the GDB commands, and shadow variables from 16 threads, on every flavor
(issue 19 item 3); gdbserver, fork and freeing on the PIE build.
"""

import os
import signal
import time

import pytest

import targets as T
from gdb_nsb import shadow
from targets import cblive as C

pytestmark = pytest.mark.timeout(300)
SECONDS = 60
PLAIN, PRE, POST, PRE_UN, POST_UN = 0, 0, 1, 2, 3
OK, REFUSE, BLOCK, CRASH = 0, 1, 2, 3


@pytest.fixture(scope="module", params=C.FLAVORS)
def flavor(request):
    return C.build_flavor(request.param)


@pytest.fixture(scope="module")
def pie():
    return C.build_flavor("pie")


def _nsb(*args, env=None):
    return T.nsb(*[str(a) for a in args], "--timeout", SECONDS, timeout=SECONDS + 60, env=env)


def _no_signal_of_ours(tg):
    """The sigwait thread saw no signal of ours: the one we send now is the first and only one it reports."""
    tg.check_running()
    os.kill(tg.pid, signal.SIGUSR2)
    assert tg.readline(10) == "GOT SIGNAL 12"
    assert tg.ask("ping") == "pong"  # nothing else was printed in between


def _patch_mapped(pid, patch):
    return any(patch in line for line in T.maps(pid))


def test_callbacks_run_in_order_with_a_lock_another_thread_holds(flavor):
    patch = C.patch_for(flavor, "cb")
    with C.Running(flavor) as tg:
        r = _nsb("patch", "-p", tg.pid, "-f", patch)
        assert r.returncode == 0, r.stderr
        assert tg.stat()["ran"] == [1, 1, 0, 0]
        assert tg.grows("p1")
        r = _nsb("list", "-p", tg.pid)
        assert r.returncode == 0 and "callback failed" not in r.stdout
        r = _nsb("revert", "-p", tg.pid, "-f", patch)
        assert r.returncode == 0, r.stderr
        assert tg.stat()["ran"] == [1, 1, 1, 1]
        assert tg.grows("plain")
        assert tg.stat()["bad"] == 0
        assert T.entry_state(tg.pid, flavor.target, "item_value") == "original"
        _no_signal_of_ours(tg)


def test_a_refusing_pre_patch_callback_writes_nothing(flavor):
    patch = C.patch_for(flavor, "cb")
    with C.Running(flavor) as tg:
        tg.mode(PRE, REFUSE)
        before = T.maps(tg.pid)
        r = _nsb("patch", "-p", tg.pid, "-f", patch)
        assert r.returncode == 19, r.stderr
        assert "pre-patch callback cb_pre_patch returned 7" in r.stderr and "nothing written" in r.stderr
        assert T.maps(tg.pid) == before  # the loaded patch and the new registry are gone again
        assert T.entry_state(tg.pid, flavor.target, "item_value") == "original"
        assert tg.stat()["ran"] == [1, 0, 0, 0]  # no post-unpatch after a refusal
        _no_signal_of_ours(tg)


def test_a_blocking_pre_patch_callback_times_out_on_the_sigwait_thread(flavor):
    patch = C.patch_for(flavor, "cb")
    with C.Running(flavor) as tg:
        tg.mode(PRE, BLOCK)
        t0 = time.monotonic()
        r = _nsb("patch", "-p", tg.pid, "-f", patch, "--callback-timeout", 2)
        assert r.returncode == 19, r.stderr
        assert "pre-patch callback cb_pre_patch timed out after 2 s" in r.stderr
        assert "loaded but not applied" in r.stderr and time.monotonic() - t0 < SECONDS
        _no_signal_of_ours(tg)  # the process runs, and the sigwait thread went back to its wait
        listed = _nsb("list", "-p", tg.pid)
        assert "inactive, callback failed" in listed.stdout and "timed out" in listed.stdout
        assert T.entry_state(tg.pid, flavor.target, "item_value") == "original"
        tg.mode(PRE, OK)
        r = _nsb("patch", "-p", tg.pid, "-f", patch)  # applying again starts afresh
        assert r.returncode == 0, r.stderr
        assert "callback failed" not in _nsb("list", "-p", tg.pid).stdout
        assert tg.grows("p1")


def test_a_crashing_post_patch_callback_leaves_the_patch_applied_and_says_so(flavor):
    patch = C.patch_for(flavor, "cb")
    with C.Running(flavor) as tg:
        tg.mode(POST, CRASH)
        r = _nsb("patch", "-p", tg.pid, "-f", patch, "--json")
        assert r.returncode == 19, r.stderr
        msg = r.process["message"]
        assert "post-patch callback cb_post_patch crashed (SIGSEGV" in msg and "stays applied" in msg
        assert tg.grows("p1")  # applied: nothing rolled back silently
        listed = _nsb("list", "-p", tg.pid, "--json")
        (p,) = listed.process["patches"]
        assert p["state"] == "active" and p["callback_state"].startswith("failed: post-patch callback cb_post_patch")
        _no_signal_of_ours(tg)
        r = _nsb("revert", "-p", tg.pid, "-f", patch)
        assert r.returncode == 0, r.stderr
        assert tg.stat()["ran"] == [1, 1, 1, 1]


def test_post_unpatch_runs_when_the_apply_fails_after_pre_patch(pie):
    patch = C.patch_for(pie, "cb")
    with C.Running(pie) as tg:
        assert tg.stat()["ran"] == [0, 0, 0, 0]  # (the control thread's first line maps its malloc arena)
        before = T.maps(tg.pid)
        r = _nsb("patch", "-p", tg.pid, "-f", patch, env={"NSB_FAULT": "fail@before-commit"})
        assert r.returncode == 10, r.stderr
        assert tg.stat()["ran"] == [1, 0, 0, 1]
        assert T.maps(tg.pid) == before
        assert T.entry_state(tg.pid, pie.target, "item_value") == "original"
        _no_signal_of_ours(tg)


def test_a_refusing_pre_unpatch_callback_keeps_the_patch(flavor):
    patch = C.patch_for(flavor, "cb")
    with C.Running(flavor) as tg:
        assert _nsb("patch", "-p", tg.pid, "-f", patch).returncode == 0
        tg.mode(PRE_UN, REFUSE)
        r = _nsb("revert", "-p", tg.pid, "-f", patch)
        assert r.returncode == 19 and "pre-unpatch callback cb_pre_unpatch returned 7" in r.stderr
        assert tg.grows("p1") and tg.stat()["ran"] == [1, 1, 1, 0]
        tg.mode(PRE_UN, OK)
        r = _nsb("revert", "-p", tg.pid, "-f", patch, "--unmap")  # post-unpatch runs before the unmap
        assert r.returncode == 0, r.stderr
        assert "memory unmapped" in r.stdout
        assert tg.stat()["ran"] == [1, 1, 2, 1]
        assert not _patch_mapped(tg.pid, patch)


def test_callbacks_and_shadow_variables_through_gdbserver(pie):
    patch, counted = C.patch_for(pie, "cb"), C.patch_for(pie, "shadow1")
    with C.Running(pie) as tg:
        tg.mode(PRE, BLOCK)
        with T.GdbServer(["--multi", "127.0.0.1:{port}"]) as gs:
            r = _nsb("patch", "--remote", gs.address, "-p", tg.pid, "-f", patch, "--callback-timeout", 2)
            assert r.returncode == 19 and "timed out after 2 s" in r.stderr, r.stderr
            tg.mode(PRE, OK)
            r = _nsb("revert", "--remote", gs.address, "-p", tg.pid, "-f", patch, "--unmap")
            assert r.returncode == 0, r.stderr
            r = _nsb("patch", "--remote", gs.address, "-p", tg.pid, "-f", counted)
            assert r.returncode == 0, r.stderr
        assert tg.grows("p1")
        _no_signal_of_ours(tg)
        _check_tallies(tg, expect_variables=True)


# ---------------------------------------------------------------- shadow variables

def _region(pid):
    found = shadow.region_in(T.mappings(pid))
    assert found is not None, "no shadow region in %d" % pid
    return found[0]


def _check_tallies(tg, expect_variables):
    """Workers parked: each item has exactly one shadow variable (item, 1) whose count equals the patched
    calls the workers saw on it, and whose constructor ran (magic); or none at all."""
    tg.pause()
    try:
        items = tg.items()
        start = _region(tg.pid)
        got = shadow.variables(lambda a, n: T.read_mem(tg.pid, a, n), start)
        mine = [v for v in got if v.id == 1]
        if not expect_variables:
            assert mine == []
            return
        by_obj = {}
        for v in mine:
            assert v.obj not in by_obj, "two variables for one object (a lost race in get_or_alloc)"
            by_obj[v.obj] = T.read_mem(tg.pid, v.data_addr, 16)
        for addr, calls in items:
            raw = by_obj.pop(addr)
            count, magic = int.from_bytes(raw[:8], "little"), int.from_bytes(raw[8:], "little")
            assert (count, magic) == (calls, 0x5EED)
        assert by_obj == {}
    finally:
        tg.resume()
    assert tg.stat()["bad"] == 0


def test_shadow_variables_from_16_threads_survive_stacked_apply_revert_and_replace(flavor):
    one, two = C.patch_for(flavor, "shadow1"), C.patch_for(flavor, "shadow2")
    with C.Running(flavor) as tg:
        assert _nsb("patch", "-p", tg.pid, "-f", one).returncode == 0
        region = _region(tg.pid)
        assert tg.grows("p1")
        assert _nsb("patch", "-p", tg.pid, "-f", two).returncode == 0
        assert tg.grows("p2")
        assert _nsb("revert", "-p", tg.pid, "-f", one).returncode == 0  # out of order: two stays on top
        assert tg.grows("p2")
        assert _nsb("revert", "-p", tg.pid, "-f", two).returncode == 0
        assert tg.grows("plain")
        _check_tallies(tg, expect_variables=True)  # reverts free nothing: no callback asked
        assert _nsb("patch", "-p", tg.pid, "-f", two).returncode == 0
        assert _region(tg.pid) == region  # one region per process, found again
        assert tg.grows("p2")
        _check_tallies(tg, expect_variables=True)  # the counts go on where they were
        # An atomic replace of two by one: the same variables, the counts go on.
        r = _nsb("patch", "--replace", "-p", tg.pid, "-f", one)
        assert r.returncode == 0 and "replaced" in r.stdout, r.stdout + r.stderr
        assert tg.grows("p1")
        assert _region(tg.pid) == region
        _check_tallies(tg, expect_variables=True)
        assert len([line for line in T.maps(tg.pid) if "nsb-shadow" in line]) == 1


def test_shadow_variables_are_freed_when_a_post_unpatch_callback_asks(pie):
    freeing = C.patch_for(pie, "shadowfree")
    with C.Running(pie) as tg:
        # Before the process has a shadow region: check and dry run take it as mapped by the apply.
        r = _nsb("check", "-p", tg.pid, "-f", freeing)
        assert r.returncode == 2, r.stdout + r.stderr
        r = _nsb("patch", "-p", tg.pid, "-f", freeing, "--dry-run")
        assert r.returncode == 0 and "nsb-shadow" in r.stdout, r.stdout + r.stderr
        assert shadow.region_in(T.mappings(tg.pid)) is None
        assert _nsb("patch", "-p", tg.pid, "-f", freeing).returncode == 0
        assert tg.grows("p1")
        _check_tallies(tg, expect_variables=True)
        assert _nsb("revert", "-p", tg.pid, "-f", freeing).returncode == 0
        _check_tallies(tg, expect_variables=False)


def test_callbacks_through_the_gdb_commands(flavor):
    """nsb-patch / nsb-list / nsb-revert in a GDB batch session: the same callbacks, the same refusals."""
    patch = C.patch_for(flavor, "cb")
    with C.Running(flavor) as tg:
        tg.mode(PRE_UN, REFUSE)
        before = T.maps(tg.pid)
        r = T.run_gdb(tg.pid, commands=["set nsb run-windows off", "nsb-patch %s" % patch], timeout=SECONDS + 60)
        assert "runs with the process's threads running" in r.stdout + r.stderr, r.stdout + r.stderr
        assert T.maps(tg.pid) == before and tg.stat()["ran"] == [0, 0, 0, 0]  # refused before any write
        r = T.run_gdb(tg.pid, commands=["set nsb callback-timeout 5", "show nsb callback-timeout",
                                        "nsb-patch %s" % patch, "nsb-list", "nsb-revert %s" % patch],
                      timeout=SECONDS + 60)
        out = r.stdout + r.stderr
        assert "Time limit of a patch callback (seconds) is 5." in out, out
        assert "applied to" in out and "callback failed" not in out, out
        assert "pre-unpatch callback cb_pre_unpatch returned 7" in out, out
        assert tg.stat()["ran"] == [1, 1, 1, 0]
        assert tg.grows("p1")
        _no_signal_of_ours(tg)


def test_a_forked_child_gets_its_own_copy_of_the_shadow_variables(pie):
    counted = C.patch_for(pie, "shadow1")
    with C.Running(pie) as tg:
        assert _nsb("patch", "-p", tg.pid, "-f", counted).returncode == 0
        assert tg.grows("p1")
        tg.pause()
        try:
            start = _region(tg.pid)
            at_fork = {v.obj: v for v in shadow.variables(lambda a, n: T.read_mem(tg.pid, a, n), start) if v.id == 1}
            counts = {o: int.from_bytes(T.read_mem(tg.pid, v.data_addr, 8), "little") for o, v in at_fork.items()}
            line = tg.ask("fork 50", timeout=20)
            assert line.startswith("forked "), line
            child = int(line.split()[1])
            assert _region(child) == start  # the same address in the child: its objects are copies too
            for v in shadow.variables(lambda a, n: T.read_mem(child, a, n), start):
                if v.id == 1:
                    assert int.from_bytes(T.read_mem(child, v.data_addr, 8), "little") == counts[v.obj] + 50
            for o, v in at_fork.items():  # the parent's own data did not see the child's calls
                assert int.from_bytes(T.read_mem(tg.pid, v.data_addr, 8), "little") == counts[o]
        finally:
            tg.resume()
        _check_tallies(tg, expect_variables=True)
