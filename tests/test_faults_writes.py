"""The tool killed after EVERY single write of an apply, a revert and an atomic replace (issues 14 and 18).

``NSB_FAULT=kill@step:K`` makes GDB SIGKILL itself right after the K-th
write into the target (memory write through the undo log: segments, registry
superblock, slot and commit word, jumps, the registry memfd's name) or
injected system call (its thread's registers and bytes already restored).
``NSB_FAULT_LOG`` names the write it stopped after.  The sequences below are
exact: a write added or gone fails the test (the table is docs/TRUST.md's).
For each kill point: the target runs, no entry is torn, ``nsb check`` gives
exactly the verdict listed, and ``patch`` and ``revert`` then succeed.  A
kill point never reached FAILS (the operation ending normally is an error).
"""

import os
import signal

import pytest

import targets as T
from targets import nsb
from targets import stress as R

pytestmark = pytest.mark.gdb

FUNCS, DELTA = R.FUNCS, R.DELTA
WORKERS = 4

# (what the K-th write or call was, `nsb check` exit code after a kill right after it).
# First apply of the `both` patch (2 functions) to a process without a registry.
APPLY = [
    ("after-syscall syscall 9", 2),                    # the patch's span mapped (R-X), not yet recorded
    ("after-syscall syscall 9", 2),                    # scratch page for the registry memfd's name
    ("after-write name of the nsb-registry memfd", 2),
    ("after-syscall syscall 319", 2),                  # memfd_create
    ("after-syscall syscall 77", 2),                   # ftruncate
    ("after-syscall syscall 9", 2),                    # registry mapped, all zeros: no registry yet
    ("after-syscall syscall 3", 2),                    # its fd closed
    ("after-syscall syscall 11", 2),                   # scratch page unmapped
    ("after-write registry superblock", 2),            # formatted, commit word 0: no registry yet
    ("after-write registry slot 1 (commit 1)", 2),     # not committed: still no registry
    ("after-write registry commit 1", 2),              # the new mapping recorded, inactive
    ("after-syscall syscall 10", 2),                   # mprotect down (R-X -> R--)
    ("after-syscall syscall 10", 2),
    ("after-write segment 0x0+0x608 (r--)", 2),
    ("after-write segment 0x1000+0x1b5 (r-x)", 2),
    ("after-write segment 0x2000+0xcc (r--)", 2),
    ("after-write segment 0x3dd8+0x248 (r--)", 2),
    ("after-write registry slot 0 (commit 2)", 2),     # active record written, not committed
    ("after-write registry commit 2", 2),              # active, no jump yet: every entry original, not applied
    ("after-write jump over compute", 8),
    ("after-write jump over scale", 0),                # every jump in place: applied
]
# Revert of that patch, applied.
REVERT = [
    ("after-write restore compute", 8),
    ("after-write restore scale", 2),                  # code restored, registry still active: not applied
    ("after-write registry slot 1 (commit 3)", 2),
    ("after-write registry commit 3", 2),              # inactive: reverted
]
# Atomic replace of that patch, applied, by the cumulative patch (compute switches to it, scale gets its
# original code back): `nsb check` of the cumulative patch, and of `both`, after each kill.  The registry
# goes through the stacked state (new on top of the old, while entries switch) and the reduced one (the old
# record left with scale only, while scale is restored): no jump is ever unaccounted for.
REPLACE = [
    ("after-syscall syscall 9", 2, 0),                   # the new span mapped, not recorded
    ("after-write registry slot 1 (commit 3)", 2, 0),
    ("after-write registry commit 3", 2, 0),             # the new mapping recorded (inactive), `both` kept
    ("after-syscall syscall 10", 2, 0),
    ("after-syscall syscall 10", 2, 0),
    ("after-write segment 0x0+0x5e8 (r--)", 2, 0),
    ("after-write segment 0x1000+0x195 (r-x)", 2, 0),
    ("after-write segment 0x2000+0xc4 (r--)", 2, 0),
    ("after-write segment 0x3dd8+0x248 (r--)", 2, 0),
    ("after-write registry slot 0 (commit 4)", 2, 0),
    ("after-write registry commit 4", 8, 8),             # stacked: the new patch on top, compute not switched
    ("after-write jump over compute", 0, 0),             # stacked, whole: `both` hidden under it at compute
    ("after-write registry slot 1 (commit 5)", 0, 0),
    ("after-write registry commit 5", 0, 0),             # reduced: `both` holds scale only
    ("after-write restore scale", 0, 2),                 # `both` in effect nowhere: not applied
    ("after-write registry slot 0 (commit 6)", 0, 2),
    ("after-write registry commit 6", 0, 2),             # `both` gone, as after the whole replace
    ("after-syscall syscall 11", 0, 2),                  # `both`'s memory unmapped
]
TABLES = {"apply": APPLY, "revert": REVERT, "replace": REPLACE}
# Each kill costs a target and six runner calls: the quick tier keeps the registry's commit points.
_QUICK = {("apply", 18), ("apply", 19), ("revert", 3), ("revert", 4), ("replace", 11), ("replace", 14)}
CASES = [pytest.param(op, k, marks=() if (op, k) in _QUICK else pytest.mark.slow)
         for op, table in TABLES.items() for k in range(1, len(table) + 1)]
# Through gdbserver the same writes come in the same order; the quick tier keeps the commit words.
_QUICK_REMOTE = {("apply", 19), ("revert", 4), ("replace", 14)}
# Without a run window a remote operation looks once: a worker caught inside compute or scale makes it
# end busy (3) before any write, more often when real-time work elsewhere preempts the workers (3 of 75
# remote applies with the runner's real-time default).  Such a look is tried again, a bounded number of times.
REMOTE_LOOKS = 4
REMOTE_CASES = [pytest.param(op, k, marks=() if (op, k) in _QUICK_REMOTE else pytest.mark.slow)
                for op, table in TABLES.items() for k in range(1, len(table) + 1)]


def _states(t):
    return R.whole_entries(t)


def _run(op, t, p, env=None):
    run = nsb("revert" if op == "revert" else "patch", "-p", t.pid, "-f", p, "--json", "--timeout", 90, env=env)
    return run.returncode, run.process, run.stderr


def _patch_for(op):
    """The patch the operation ``op`` works with (a replace: the cumulative one, over ``both``)."""
    return R.patch("cumulative" if op == "replace" else "both")


@pytest.mark.timeout(300)
@pytest.mark.parametrize("op,k", CASES)
def test_kill_after_each_write(op, k, tmp_path):
    p = _patch_for(op)
    log = tmp_path / "killed"
    with R.RTarget(workers=WORKERS) as t:
        if op != "apply":
            rc, doc, err = _run("apply", t, R.patch("both"))
            assert rc == 0, (doc, err)
        rc, doc, err = _run(op, t, p, env={"NSB_FAULT": "kill@step:%d" % k, "NSB_FAULT_LOG": str(log)})
        _killed_as_listed(op, k, rc, doc, err, log)
        _after_the_kill(op, k, t, p)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("op,k", REMOTE_CASES)
def test_kill_after_each_write_through_gdbserver(op, k, tmp_path):
    """The same kill points through gdbserver: GDB dies, the runner releases the process from
    gdbserver (a fresh GDB detaches it: the registers GDB restored live in gdbserver's cache until
    then), gdbserver is killed next; the verdicts and repairs are those of the local table."""
    p = _patch_for(op)
    log = tmp_path / "killed"
    with R.RTarget(workers=WORKERS) as t:
        if op != "apply":
            rc, doc, err = _run("apply", t, R.patch("both"))
            assert rc == 0, (doc, err)
        for attempt in range(1, REMOTE_LOOKS + 1):
            with T.GdbServer(["--attach", "127.0.0.1:{port}", str(t.pid)]) as gs:
                run = nsb("revert" if op == "revert" else "patch", "--remote", gs.address, "-f", p, "--json",
                          "--timeout", 90, env={"NSB_FAULT": "kill@step:%d" % k, "NSB_FAULT_LOG": str(log)})
                rc, doc, err = run.returncode, run.process, run.stderr
                busy = rc == 3 and "no run window on this remote target" in (doc.get("message") or "")
                if not busy or attempt == REMOTE_LOOKS:
                    _killed_as_listed(op, k, rc, doc, err, log)
                    assert "released from gdbserver" in doc["message"], doc
                if busy:
                    gs.proc.wait(10)  # our GDB detached: gdbserver lets the process go and exits by itself
                try:
                    os.killpg(gs.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass  # it exited once the process was detached
                gs.proc.wait(10)
            if not busy:
                break
            assert not log.exists(), "a busy look reached a write"
            assert T.wait_running(t.pid, 2.0), ("a busy look left the process stopped", T.thread_states(t.pid))
        _after_the_kill(op, k, t, p)


def _killed_as_listed(op, k, rc, doc, err, log):
    want_what = TABLES[op][k - 1][0]
    assert rc != 0, "kill point %s #%d (%s) was never reached: the %s ended normally" % (op, k, want_what, op)
    assert rc == 10 and "GDB failed" in doc["message"], (rc, doc, err)
    what = log.read_text().split(None, 2)
    assert what[:2] == ["step", str(k)] and what[2].strip() == want_what, (what, want_what)


def _after_the_kill(op, k, t, p):
    """The target runs, loses at most the one signal GDB held, and `check` gives the listed verdict;
    revert (when something is applied) and patch then succeed."""
    want_what, want_check = TABLES[op][k - 1][:2]
    assert T.wait_for(lambda: T.tracer_pid(t.pid) == 0, 5)
    assert T.wait_running(t.pid, 2.0), T.thread_states(t.pid)
    assert t.alive()
    # A signal GDB had intercepted and not yet passed on dies with GDB (docs/TRUST.md, "signals GDB
    # holds"): GDB keeps at most one per thread, and each worker has at most one in flight (it waits
    # for its handler), so at most WORKERS (one in 3 of 25 kills, two once in CI).  A worker whose
    # signal died waits for it forever; the calls that follow must lose none.
    s = t.settle(timeout=10)  # a signal that died with GDB is never handled: this waits the whole bound
    lost = s["sent"] - s["handled"]
    assert s["wrong"] == 0 and 0 <= lost <= WORKERS, s
    if op == "replace":
        _after_the_replace_kill(k, t, p, lost)
        return
    states = _states(t)
    run = nsb("check", "-p", t.pid, "-f", p, "--json", "--timeout", 90)
    rc, doc, err = run.returncode, run.process, run.stderr
    assert rc == want_check, "after %s #%d (%s): check said %d (%s), TRUST.md says %d" % (
        op, k, want_what, rc, doc.get("message"), want_check)
    if rc in (0, 2):  # applied: every entry jumps; not applied: every entry is the original code
        assert set(states.values()) == {"jump" if rc == 0 else "original"}, (states, doc)
    if rc in (0, 8):
        run = nsb("revert", "-p", t.pid, "-f", p, "--json", "--timeout", 90)
        rc, doc, err = run.returncode, run.process, run.stderr
        assert rc == 0, (doc.get("message"), err)
        assert _states(t) == {"compute": "original", "scale": "original"}
    run = nsb("patch", "-p", t.pid, "-f", p, "--json", "--timeout", 90)
    rc, doc, err = run.returncode, run.process, run.stderr
    assert rc == 0, (doc.get("message"), err)
    assert t.values() == (100, 1000)
    run = nsb("revert", "-p", t.pid, "-f", p, "--json", "--timeout", 90)
    rc, doc, err = run.returncode, run.process, run.stderr
    assert rc == 0, (doc.get("message"), err)
    assert t.values() == (0, 0)
    run = nsb("check", "-p", t.pid, "-f", p, "--json", "--timeout", 90)
    rc, doc, err = run.returncode, run.process, run.stderr
    assert rc == 2, doc
    s = t.settle()
    # Within TRUST.md's bound, at most one per worker.  Normally the count stays `lost` (the calls since lose
    # none: test_load asserts that over 200 cycles); it fell once (a signal delivered after the first settle
    # gave up on a loaded machine: 2 then 1) and grew once in some 300 cells of CI runs (1 then 2 after the
    # final check, cause not found; not reproduced in 40 kills followed by 8 checks each).
    assert s["wrong"] == 0 and 0 <= s["sent"] - s["handled"] <= WORKERS, (s, lost)
    print("kill after %s #%d (%s): check said %d as listed; patch and revert then succeeded; %d signal%s "
          "lost with GDB" % (op, k, want_what, want_check, lost, "" if lost == 1 else "s"))


def _check(t, p):
    run = nsb("check", "-p", t.pid, "-f", p, "--json", "--timeout", 90)
    return run.returncode, run.process.get("message")


def _after_the_replace_kill(k, t, p, lost):
    """`check` of both patches as listed; the repair the table implies succeeds: a partly switched new
    patch is reverted (back to `both` alone) and the replace is done again, a replaced patch still in
    effect is reverted (which finishes the replace); then revert gives the original program back."""
    want_what, want_new, want_old = REPLACE[k - 1]
    old = R.patch("both")
    got = (_check(t, p), _check(t, old))
    assert (got[0][0], got[1][0]) == (want_new, want_old), "after replace #%d (%s): check said %s, TRUST.md %s" % (
        k, want_what, got, (want_new, want_old))
    R.whole_entries(t)  # never a torn entry, each function's value matching its entry
    if want_new == 8:   # stacked, not switched: reverting the new patch gives back `both`, whole
        rc, doc, err = _run("revert", t, p)
        assert rc == 0, (doc.get("message"), err)
        assert t.values() == (100, 1000) and _check(t, old)[0] == 0
    if want_old == 0 and want_new == 0:  # `both` still in effect under or beside the new patch
        rc, doc, err = _run("revert", t, old)
        assert rc == 0, (doc.get("message"), err)
    if _check(t, p)[0] != 0:
        rc, doc, err = _run("replace", t, p)
        assert rc == 0, (doc.get("message"), err)
    assert t.values() == (100, 0)
    assert R.whole_entries(t) == {"compute": "jump", "scale": "original"}
    assert _check(t, old)[0] == 2 and _check(t, p)[0] == 0
    rc, doc, err = _run("revert", t, p)
    assert rc == 0, (doc.get("message"), err)
    assert t.values() == (0, 0) and _check(t, p)[0] == 2 and _check(t, old)[0] == 2
    s = t.settle()
    # Within TRUST.md's bound, at most one per worker.  Normally the count stays `lost` (the calls since lose
    # none: test_load asserts that over 200 cycles); it fell once (a signal delivered after the first settle
    # gave up on a loaded machine: 2 then 1) and grew once in some 300 cells of CI runs (1 then 2 after the
    # final check, cause not found; not reproduced in 40 kills followed by 8 checks each).
    assert s["wrong"] == 0 and 0 <= s["sent"] - s["handled"] <= WORKERS, (s, lost)
    print("kill after replace #%d (%s): check said %d/%d as listed; repaired, replaced again and reverted"
          % (k, want_what, want_new, want_old))


@pytest.mark.timeout(300)
@pytest.mark.parametrize("op", list(TABLES))
def test_no_write_beyond_the_table(op, tmp_path):
    """kill@step:N+1 is never reached: the table lists every write of the operation."""
    p = _patch_for(op)
    log = tmp_path / "killed"
    with R.RTarget(workers=WORKERS) as t:
        if op != "apply":
            assert _run("apply", t, R.patch("both"))[0] == 0
        rc, doc, err = _run(op, t, p, env={"NSB_FAULT": "kill@step:%d" % (len(TABLES[op]) + 1),
                                           "NSB_FAULT_LOG": str(log)})
        assert rc == 0 and not log.exists(), (rc, doc.get("message"), log.exists() and log.read_text())
