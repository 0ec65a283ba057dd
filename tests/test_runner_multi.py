"""Several processes in one runner call: -p A,B, repeated -p, a failing one among them, --all-of."""

import pytest

import targets as T
from targets import runner as rt

pytestmark = [pytest.mark.gdb, pytest.mark.timeout(400)]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    # A build of its own (unique build-id): --all-of must not find other tests' targets.
    target = rt.build_target("\nint runner_multi_build;\n")
    patch = rt.make_patch(target, tmp_path_factory.mktemp("multi"))
    return target, patch


def by_pid(doc):
    return {p["pid"]: p for p in doc["processes"]}


def test_comma_and_repeated_pids_each_patched_and_reported(built):
    target, patch = built
    with rt.start(target) as a, rt.start(target) as b:
        run = T.nsb("patch", "-p", "%d,%d" % (a.pid, b.pid), "-f", patch, "--json")
        rc, doc = run.returncode, run.doc
        assert rc == 0 and doc["result"] == "ok", doc
        assert [p["pid"] for p in doc["processes"]] == [a.pid, b.pid]
        assert all(p["code"] == 0 and len(p["functions"]) == 2 for p in doc["processes"]), doc
        assert a.ask("v") == rt.PATCHED and b.ask("v") == rt.PATCHED

        run = T.nsb("revert", "-p", b.pid, "-p", a.pid, "-f", patch, "--json")
        rc, doc = run.returncode, run.doc
        assert rc == 0 and [p["pid"] for p in doc["processes"]] == [b.pid, a.pid], doc
        assert a.ask("v") == rt.ORIGINAL and b.ask("v") == rt.ORIGINAL

        # Human output names each process (the reverted patch stays mapped, inactive).
        r = T.nsb("list", "-p", a.pid, "-p", b.pid)
        assert r.returncode == 0, r.stderr
        for pid in (a.pid, b.pid):
            assert "pid %d: 1 live patch in process %d" % (pid, pid) in r.stdout, r.stdout
        assert r.stdout.count("  inactive  ") == 2, r.stdout


def test_one_failing_process_does_not_stop_the_others(built):
    target, patch = built
    with rt.start(target) as a, rt.start(target) as b:
        assert T.nsb("patch", "-p", b.pid, "-f", patch, "--json").returncode == 0
        run = T.nsb("patch", "-p", "%d,999999999,%d" % (a.pid, b.pid), "-f", patch, "--json")
        rc, doc = run.returncode, run.doc
        procs = by_pid(doc)
        assert procs[a.pid]["code"] == 0 and procs[999999999]["code"] == 6 and procs[b.pid]["code"] == 5, doc
        assert rc == 6 and doc["result"] == "mixed"  # the first failure in -p order
        assert a.ask("v") == rt.PATCHED and b.ask("v") == rt.PATCHED


def test_all_of_finds_every_process_of_the_target_build(tmp_path):
    # Its own build: the other tests of this module may run at the same time (xdist).
    target = rt.build_target("\nint runner_all_of_build;\n")
    patch = rt.make_patch(target, tmp_path)
    other = rt.build_target("\nint runner_multi_other_build;\n")
    with rt.start(target) as a, rt.start(target) as b, rt.start(other) as c:
        run = T.nsb("check", "--all-of", "-f", patch, "--json")
        rc, doc = run.returncode, run.doc
        assert rc == 2 and sorted(by_pid(doc)) == sorted([a.pid, b.pid]), doc
        run = T.nsb("patch", "--all-of", "-f", patch, "--json")
        rc, doc = run.returncode, run.doc
        assert rc == 0 and sorted(by_pid(doc)) == sorted([a.pid, b.pid]), doc
        assert a.ask("v") == rt.PATCHED and b.ask("v") == rt.PATCHED and c.ask("v") == rt.ORIGINAL
        # -p and --all-of together: the union, each process once.
        run = T.nsb("check", "-p", c.pid, "--all-of", "-f", patch, "--json")
        rc, doc = run.returncode, run.doc
        procs = by_pid(doc)
        assert sorted(procs) == sorted([a.pid, b.pid, c.pid]) and len(doc["processes"]) == 3, doc
        assert procs[c.pid]["code"] == 4 and procs[a.pid]["code"] == 0 and rc == 4
    run = T.nsb("check", "--all-of", "-f", patch, "--json")
    rc, doc = run.returncode, run.doc
    assert rc == 6 and doc["processes"] == [] and "no process maps the target" in doc["message"], doc
