"""The standalone runner against real processes: every subcommand, the exit codes they can give.

Each process result is checked through ``--json`` against gdb_nsb/data/result.schema.json
(targets.nsb with --json), and the target's own answers show what really happened.
"""

import os
import subprocess
import time

import pytest

import targets as T
from targets import only_process as one
from targets import runner as rt

pytestmark = [pytest.mark.gdb, pytest.mark.timeout(400)]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    target = rt.build_target()
    patch = rt.make_patch(target, tmp_path_factory.mktemp("runner"))
    return target, patch


def test_lifecycle_every_subcommand_and_its_codes(built):
    target, patch = built
    with rt.start(target) as t:
        pid = t.pid
        assert t.ask("v") == rt.ORIGINAL

        run = T.nsb("check", "-p", pid, "-f", patch, "--json")
        rc, doc = run.returncode, run.doc
        p = one(doc)
        assert rc == 2 and p["state"] == "not applied" and "could be applied now" in p["message"]
        assert doc["result"] == "error" and p["target"]["mapped"] is True

        run = T.nsb("patch", "-p", pid, "-f", patch, "--json")
        rc, doc = run.returncode, run.doc
        p = one(doc)
        assert rc == 0, p
        assert doc["result"] == "ok" and p["result"] == "ok" and p["pid"] == pid
        assert sorted(f["name"] for f in p["functions"]) == ["compute", "scale"]
        assert p["patch"]["path"] == patch and p["patch"]["target_build_id"] == p["target"]["build_id"]
        assert p["timings"]["total_s"] > 0 and "write_s" in p["timings"]
        assert t.ask("v") == rt.PATCHED
        assert T.wait_running(pid)

        run = T.nsb("patch", "-p", pid, "-f", patch, "--json")
        rc, doc = run.returncode, run.doc
        assert rc == 5 and "already applied" in one(doc)["message"]
        assert t.ask("v") == rt.PATCHED

        run = T.nsb("check", "-p", pid, "-f", patch, "--json")
        rc, doc = run.returncode, run.doc
        assert rc == 0 and one(doc)["state"] == "applied"

        run = T.nsb("list", "-p", pid, "--json")
        rc, doc = run.returncode, run.doc
        p = one(doc)
        assert rc == 0 and len(p["patches"]) == 1
        assert p["patches"][0]["state"] == "active"
        checked = one(T.nsb("check", "-p", pid, "-f", patch, "--json").doc)
        assert p["patches"][0]["build_id"] == checked["patch"]["build_id"]
        assert {f["name"]: f["layer"] for f in p["functions"]} == {"compute": 1, "scale": 1}

        run = T.nsb("revert", "-p", pid, "-f", patch, "--json")
        rc, doc = run.returncode, run.doc
        assert rc == 0, doc
        assert t.ask("v") == rt.ORIGINAL
        ent = rt.entries(target, pid)
        for name, addr in ent.items():
            assert T.read_mem(pid, addr, 5) == T.function_bytes(target, name, 5)[1]

        run = T.nsb("revert", "-p", pid, "-f", patch, "--json")
        rc, doc = run.returncode, run.doc
        assert rc == 2 and "not applied" in one(doc)["message"]

        # Re-apply, then revert by build-id prefix (what `nsb list` shows).
        assert T.nsb("patch", "-p", pid, "-f", patch, "--json").returncode == 0
        assert t.ask("v") == rt.PATCHED
        bid = one(T.nsb("list", "-p", pid, "--json").doc)["patches"][0]["build_id"]
        run = T.nsb("revert", "-p", pid, "-f", bid[:12], "--json")
        rc, doc = run.returncode, run.doc
        assert rc == 0, doc
        assert t.ask("v") == rt.ORIGINAL
        assert t.alive() and T.wait_running(pid)


def test_human_output_and_success_on_stdout(built):
    target, patch = built
    with rt.start(target) as t:
        r = T.nsb("patch", "-p", t.pid, "-f", patch)
        assert r.returncode == 0, r.stderr
        assert "applied to target: 2 functions redirected" in r.stdout and r.stderr == ""
        r = T.nsb("patch", "-p", t.pid, "-f", patch)
        assert r.returncode == 5 and r.stdout == "" and r.stderr.startswith("nsb: ") and "already applied" in r.stderr
        r = T.nsb("list", "-p", t.pid)
        assert r.returncode == 0 and "compute" in r.stdout and "layer 1 of 1 (top)" in r.stdout
        assert T.nsb("revert", "-p", t.pid, "-f", patch).returncode == 0
        assert t.ask("v") == rt.ORIGINAL


def test_build_id_mismatch_is_4(built, tmp_path):
    target, patch = built
    other = rt.build_target("\nint another_build;\n")  # same name "target", another build-id
    with rt.start(other) as t:
        run = T.nsb("check", "-p", t.pid, "-f", patch, "--json")
        rc, doc = run.returncode, run.doc
        assert rc == 4 and "build-id mismatch" in one(doc)["message"], doc
        run = T.nsb("patch", "-p", t.pid, "-f", patch, "--json")
        rc, doc = run.returncode, run.doc
        assert rc == 4 and "build-id mismatch" in one(doc)["message"], doc
        assert t.ask("v") == rt.ORIGINAL
        assert "no live patches" in one(T.nsb("list", "-p", t.pid, "--json").doc)["message"]


def test_no_such_process_is_6(built):
    _target, patch = built
    dead = subprocess.Popen(["true"])
    dead.wait()
    for cmd in (["patch", "-f", patch], ["check", "-f", patch], ["revert", "-f", patch], ["list"]):
        run = T.nsb(*cmd, "-p", dead.pid, "--json")
        rc, doc = run.returncode, run.doc
        assert rc == 6 and one(doc)["message"] == "process %d not found" % dead.pid, doc


def test_busy_thread_check_3_patch_3_then_applies(built):
    target, patch = built
    with rt.start(target) as t:
        assert t.ask("park") == "parked"
        ent = rt.entries(target, t.pid)
        before = {n: T.read_mem(t.pid, a, 5) for n, a in ent.items()}
        maps_before = T.maps(t.pid)

        run = T.nsb("check", "-p", t.pid, "-f", patch, "--retries", "3", "--json")
        rc, doc = run.returncode, run.doc
        p = one(doc)
        assert rc == 3 and "busy at each of 3 looks" in p["message"] and "compute" in p["message"], p
        assert p["state"] == "not applied"

        run = T.nsb("patch", "-p", t.pid, "-f", patch, "--retries", "3", "--json")
        rc, doc = run.returncode, run.doc
        p = one(doc)
        assert rc == 3 and "no safe point after 3 checks" in p["message"] and "compute" in p["message"], p
        assert {n: T.read_mem(t.pid, a, 5) for n, a in ent.items()} == before
        assert t.ask("v") == rt.ORIGINAL
        assert T.wait_running(t.pid)

        assert t.ask("unpark") == "unparked"
        run = T.nsb("patch", "-p", t.pid, "-f", patch, "--json")
        rc, doc = run.returncode, run.doc
        assert rc == 0, doc
        assert t.ask("v") == rt.PATCHED
        del maps_before


def test_timeout_before_a_safe_point_is_busy_3_and_untouched(built):
    """--timeout cuts the safe-point wait: exit 3 (busy, decided), named as the timeout, nothing written."""
    target, patch = built
    with rt.start(target) as t:
        assert t.ask("park") == "parked"
        ent = rt.entries(target, t.pid)
        before = {n: T.read_mem(t.pid, a, 5) for n, a in ent.items()}
        maps_before = T.maps(t.pid)
        started = time.monotonic()
        # 1000 tries would take minutes: the 3 s deadline ends it.
        run = T.nsb("patch", "-p", t.pid, "-f", patch, "--timeout", "3", "--retries", "1000", "--json")
        rc, doc = run.returncode, run.doc
        elapsed = time.monotonic() - started
        p = one(doc)
        assert rc == 3, p
        assert "the deadline (--timeout) passed before a safe point" in p["message"] and "compute" in p["message"], p
        # The deadline counts from GDB's start (attach included); the runner's hard kill comes 15 s later.
        assert elapsed < 3 + 15 + 20, elapsed
        assert {n: T.read_mem(t.pid, a, 5) for n, a in ent.items()} == before
        assert T.maps(t.pid) == maps_before
        assert T.wait_running(t.pid) and t.ask("v") == rt.ORIGINAL
        assert t.ask("unpark") == "unparked"


def test_partial_state_is_8(built):
    """Apply, then put one entry's original bytes back behind the tool's back: check/list say partial."""
    target, patch = built
    with rt.start(target) as t:
        assert T.nsb("patch", "-p", t.pid, "-f", patch, "--json").returncode == 0
        ent = rt.entries(target, t.pid)
        T.write_mem(t.pid, ent["scale"], T.function_bytes(target, "scale", 5)[1])
        assert t.ask("v") == "v 1501 2"  # compute patched, scale original: half a patch

        run = T.nsb("check", "-p", t.pid, "-f", patch, "--json")
        rc, doc = run.returncode, run.doc
        p = one(doc)
        assert rc == 8 and p["state"] == "partial" and "scale" in p["message"], p
        run = T.nsb("list", "-p", t.pid, "--json")
        rc, doc = run.returncode, run.doc
        p = one(doc)
        assert rc == 8 and p["patches"][0]["state"] == "partial" and "partial state" in p["message"], p
        run = T.nsb("patch", "-p", t.pid, "-f", patch, "--json")
        rc, doc = run.returncode, run.doc
        assert rc != 0, doc
        assert t.ask("v") == "v 1501 2"

        # revert repairs it: both functions back to the original.
        run = T.nsb("revert", "-p", t.pid, "-f", patch, "--json")
        rc, doc = run.returncode, run.doc
        assert rc == 0, doc
        assert t.ask("v") == rt.ORIGINAL
        for name, addr in ent.items():
            assert T.read_mem(t.pid, addr, 5) == T.function_bytes(target, name, 5)[1]
        assert T.nsb("check", "-p", t.pid, "-f", patch, "--json").returncode == 2


def test_dry_run_writes_nothing_and_prints_the_plan(built):
    target, patch = built
    with rt.start(target) as t:
        ent = rt.entries(target, t.pid)
        before = {n: T.read_mem(t.pid, a, 16) for n, a in ent.items()}
        maps_before = T.maps(t.pid)

        r = T.nsb("patch", "-p", t.pid, "-f", patch, "--dry-run")
        assert r.returncode == 0, r.stderr
        assert "dry run: nothing written" in r.stdout
        assert "redirect compute" in r.stdout and "redirect scale" in r.stdout
        assert "could be applied now" in r.stdout
        run = T.nsb("patch", "-p", t.pid, "-f", patch, "--dry-run", "--json")
        rc, doc = run.returncode, run.doc
        assert rc == 0 and any("jump over compute" in line for line in one(doc)["lines"]), doc

        assert {n: T.read_mem(t.pid, a, 16) for n, a in ent.items()} == before
        assert T.maps(t.pid) == maps_before  # no patch mapping, no registry mapping
        assert t.ask("v") == rt.ORIGINAL
        assert T.nsb("check", "-p", t.pid, "-f", patch, "--json").returncode == 2
        assert "no live patches" in one(T.nsb("list", "-p", t.pid, "--json").doc)["message"]

        # A dry-run revert of an applied patch leaves it applied.
        assert T.nsb("patch", "-p", t.pid, "-f", patch, "--json").returncode == 0
        applied = {n: T.read_mem(t.pid, a, 16) for n, a in ent.items()}
        maps_applied = T.maps(t.pid)
        r = T.nsb("revert", "-p", t.pid, "-f", patch, "--dry-run")
        assert r.returncode == 0 and "dry run: nothing written" in r.stdout, r.stderr
        assert {n: T.read_mem(t.pid, a, 16) for n, a in ent.items()} == applied
        assert T.maps(t.pid) == maps_applied
        assert t.ask("v") == rt.PATCHED


def test_gated_gdb_attaches_only_when_released(built, tmp_path):
    """One local process: GDB boots and reads the files while the runner checks the patch, then waits.
    Cancelled (bad patch, runner gone) it exits without ever attaching; released it does the job."""
    import argparse

    from gdb_nsb.standalone import runner
    target, patch = built
    args = argparse.Namespace(timeout=60.0, remote=None, verbose=0, patch=patch)
    with rt.start(target) as t:
        session = runner.GdbRun("check", t.pid, args, [runner.quote(patch)]).start(gated=True)
        try:
            deadline = time.monotonic() + 60
            # GDB reached the gate (it has read the target's maps and files) and waits there.
            while time.monotonic() < deadline and session.proc.poll() is None and not _waits_at_gate(session):
                time.sleep(0.05)
            assert _waits_at_gate(session) and T.tracer_pid(t.pid) == 0
        finally:
            session.cancel()
        assert session.proc.returncode == 0 and T.tracer_pid(t.pid) == 0
        assert t.ask("v") == rt.ORIGINAL
        session = runner.GdbRun("check", t.pid, args, [runner.quote(patch)]).start(gated=True)
        doc = session.finish({"path": patch})
        assert doc["code"] == 2 and "could be applied now" in doc["message"], doc
        assert T.tracer_pid(t.pid) == 0 and t.ask("v") == rt.ORIGINAL


def test_gated_gdb_takes_the_runners_decode_of_the_patch(built):
    """The runner hands its decoded patch over with "go": GDB never imports protobuf (its C module is
    not mapped while GDB waits at the gate) and uses that decode (a handed-over decode naming another
    target build-id gives exit 4); a decode whose file identity no longer matches is not used."""
    import argparse
    import dataclasses

    from gdb_nsb.fileid import file_identity
    from gdb_nsb.standalone import runner
    target, patch = built
    args = argparse.Namespace(timeout=60.0, remote=None, verbose=0, patch=patch)
    real = runner.read_patch(patch)
    assert runner.DECODED[os.path.abspath(patch)] == (file_identity(patch), real, True)
    other = dataclasses.replace(real, old_bid="ab" * 20)
    try:
        with rt.start(target) as t:
            runner.DECODED[os.path.abspath(patch)] = (file_identity(patch), other, True)
            session = runner.GdbRun("check", t.pid, args, [runner.quote(patch)]).start(gated=True)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and session.proc.poll() is None and not _waits_at_gate(session):
                time.sleep(0.05)
            assert _waits_at_gate(session)
            with open("/proc/%d/maps" % session.proc.pid) as f:
                gdb_maps = f.read()
            assert "/_upb/" not in gdb_maps and "protobuf" not in gdb_maps
            doc = session.finish({"path": patch})
            assert doc["code"] == 4 and "ab" * 20 in doc["message"], doc
            stale = file_identity(patch)[:3] + (0,)
            runner.DECODED[os.path.abspath(patch)] = (stale, other, True)
            doc = runner.GdbRun("check", t.pid, args, [runner.quote(patch)]).start(gated=True).finish(
                {"path": patch})
            assert doc["code"] == 2 and "could be applied now" in doc["message"], doc
            # A decode made without the build-id check never serves one that needs it (check, patch)...
            runner.DECODED[os.path.abspath(patch)] = (file_identity(patch), other, False)
            doc = runner.GdbRun("check", t.pid, args, [runner.quote(patch)]).start(gated=True).finish(
                {"path": patch})
            assert doc["code"] == 2 and "could be applied now" in doc["message"], doc
            # ...but serves a revert, which names the patch by the decode's build-id (inside the stop).
            assert T.nsb("patch", "-p", t.pid, "-f", patch).returncode == 0 and t.ask("v") == rt.PATCHED
            renamed = dataclasses.replace(real, new_bid="cd" * 20)
            runner.DECODED[os.path.abspath(patch)] = (file_identity(patch), renamed, False)
            doc = runner.GdbRun("revert", t.pid, args, [runner.quote(patch)]).start(gated=True).finish(
                {"path": patch})
            assert doc["code"] == 2 and "cd" * 20 in doc["message"], doc
            assert t.ask("v") == rt.PATCHED
            runner.DECODED.clear()
            assert T.nsb("revert", "-p", t.pid, "-f", patch).returncode == 0
            assert T.tracer_pid(t.pid) == 0 and t.ask("v") == rt.ORIGINAL
    finally:
        runner.DECODED.clear()


def _waits_at_gate(session):
    """GDB's main thread is blocked in read() on the gate pipe (fd number from its command line)."""
    import re
    fd = next(int(m.group(1)) for a in session.proc.args for m in [re.search(r"gate=(\d+)", a)] if m)
    try:
        with open("/proc/%d/syscall" % session.proc.pid) as f:
            fields = f.read().split()
    except OSError:
        return False
    return len(fields) > 1 and fields[0] == "0" and int(fields[1], 16) == fd


def test_bad_patch_file_never_attaches(built, tmp_path):
    """The patch file is found corrupt while GDB boots: exit 9, and GDB never attached (watched)."""
    import threading
    target, _patch = built
    bad = tmp_path / "bad.so"
    bad.write_bytes(b"\x7fELF" + b"\0" * 200)
    seen = []
    with rt.start(target) as t:
        stop = threading.Event()

        def watch():
            while not stop.is_set():
                seen.append(T.tracer_pid(t.pid))
                time.sleep(0.001)
        w = threading.Thread(target=watch)
        w.start()
        try:
            r = T.nsb("patch", "-p", str(t.pid), "-f", str(bad))
        finally:
            stop.set()
            w.join()
        assert r.returncode == 9, (r.stdout, r.stderr)
        assert len(seen) > 10 and set(seen) == {0}
        assert t.ask("v") == rt.ORIGINAL
