"""Fleets through Ansible (issue 16, item 7): the example playbook and its nsb_patch module, run by a
real ansible-playbook against localhost on real processes: apply, apply again, check mode, revert,
a wrong checksum, a process the runner fails on.  ansible-core is installed once, pinned, into a venv
cached under ~/.cache."""

import fcntl
import json
import os
import subprocess
import sys

import pytest

from test_hostwide import TracerWatch
import targets as T
from targets import runner as rt

pytestmark = [pytest.mark.gdb, pytest.mark.slow, pytest.mark.timeout(900)]

ANSIBLE_CORE = "2.19.14"
VENV = os.path.join(os.path.expanduser("~/.cache"), "nsb-ansible-%s" % ANSIBLE_CORE)
PLAYBOOK = os.path.join(T.ROOT, "ansible", "playbook-example.yml")


def _ansible_playbook():
    """ansible-playbook of the cached venv, created on first use (one installer at a time)."""
    exe = os.path.join(VENV, "bin", "ansible-playbook")
    os.makedirs(os.path.dirname(VENV), exist_ok=True)
    with open(VENV + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.path.exists(exe):
            subprocess.run([sys.executable, "-m", "venv", VENV], check=True, timeout=300)
            r = subprocess.run([os.path.join(VENV, "bin", "pip"), "install", "-q", "--disable-pip-version-check",
                                "ansible-core==%s" % ANSIBLE_CORE], capture_output=True, text=True, timeout=600)
            if r.returncode != 0:
                pytest.skip("ansible-core %s could not be installed: %s" % (ANSIBLE_CORE, r.stderr.strip()[-300:]))
    return exe


def _sha256(path):
    import hashlib
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _play(tmp_path, patch, state="applied", check=False, extra=()):
    """Run the example playbook on localhost: the nsb_patch task's result (dict)."""
    env = dict(os.environ, ANSIBLE_LOCALHOST_WARNING="false", ANSIBLE_NOCOLOR="1",
               ANSIBLE_INVENTORY_UNPARSED_WARNING="false", ANSIBLE_LOCAL_TEMP=str(tmp_path / "ansible-local"),
               ANSIBLE_REMOTE_TEMP=str(tmp_path / "ansible-remote"), ANSIBLE_PYTHON_INTERPRETER=sys.executable)
    result_file = tmp_path / "result"
    written = tmp_path / "result.localhost.json"
    if written.exists():
        written.unlink()
    argv = [_ansible_playbook(), "-i", "localhost,", "-c", "local", PLAYBOOK,
            "-e", "target_hosts=localhost", "-e", "nsb_become=false", "-e", "patch=%s" % patch,
            "-e", "patch_dest=%s" % (tmp_path / "on-host" / "fix.so"), "-e", "nsb_state=%s" % state,
            "-e", "nsb_command=%s" % os.path.join(T.ROOT, "nsb"), "-e", "nsb_result_file=%s" % result_file]
    argv += list(extra) + (["--check"] if check else [])
    r = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=env, cwd=str(tmp_path))
    assert written.exists(), "no result file (rc %d):\n%s\n%s" % (r.returncode, r.stdout, r.stderr)
    with open(written) as f:
        return r.returncode, json.load(f)


def _by_pid(result):
    return {p["pid"]: p for p in result["processes"]}


def _own_target(tag):
    """A target build of the test's own: the module acts on every process of the host that maps the target,
    so two tests running at once (pytest-xdist) must not share one (same build-id, same patch)."""
    return rt.build_target("\nint ansible_build_%s;\n" % tag)


def test_playbook_apply_idempotent_check_revert(tmp_path):
    target = _own_target("apply")
    patch = rt.make_patch(target, tmp_path)
    with rt.start(target) as a, rt.start(target) as b:
        rc, res = _play(tmp_path, patch)
        assert rc == 0 and res["changed"] is True, res
        assert {p["after"] for p in _by_pid(res).values()} == {"applied"} and sorted(_by_pid(res)) == sorted(
            [a.pid, b.pid]), res
        facts = res["ansible_facts"]["nsb_patch"]
        assert facts["sha256"] == _sha256(patch) and len(facts["processes"]) == 2, facts
        assert a.ask("v") == b.ask("v") == rt.PATCHED

        rc, res = _play(tmp_path, patch)
        assert rc == 0 and res["changed"] is False, res
        assert {p["before"] for p in res["processes"]} == {"applied"}, res

        # Check mode: answered from the passive read, no process is attached (paused).
        with TracerWatch([a.pid, b.pid]) as watch:
            rc, res = _play(tmp_path, patch, state="reverted", check=True)
        assert watch.seen == set(), "check mode attached to %s" % watch.seen
        assert rc == 0 and res["changed"] is True, res
        assert {p["after"] for p in res["processes"]} == {"would be reverted"}, res
        assert a.ask("v") == b.ask("v") == rt.PATCHED

        rc, res = _play(tmp_path, patch, state="reverted")
        assert rc == 0 and res["changed"] is True, res
        assert a.ask("v") == b.ask("v") == rt.ORIGINAL
        rc, res = _play(tmp_path, patch, state="reverted")
        assert rc == 0 and res["changed"] is False, res

        # The file on the host is not the one the checksum names: fails before anything runs.
        rc, res = _play(tmp_path, patch, extra=["-e", "patch_sha256=%s" % ("0" * 64)])
        assert rc != 0 and res.get("failed") and "checksum mismatch" in res["msg"], res
        assert a.ask("v") == b.ask("v") == rt.ORIGINAL


def test_runner_failure_fails_the_task_with_its_message(tmp_path):
    """A process the runner cannot patch (a thread parked inside compute): the task fails with the
    runner's own message for that pid; the other process is patched and reported changed."""
    target = _own_target("failure")
    patch = rt.make_patch(target, tmp_path)
    with rt.start(target) as a, rt.start(target) as b:
        assert a.ask("park") == "parked"
        rc, res = _play(tmp_path, patch, extra=["-e", "nsb_retries=2"])
        assert rc != 0 and res.get("failed"), res
        msg = res["msg"]
        assert msg.startswith("pid %d: " % a.pid) and "no safe point" in msg and "compute" in msg, res
        procs = _by_pid(res)
        assert procs[a.pid]["code"] == 3 and procs[a.pid]["message"] in res["msg"], procs
        assert procs[b.pid]["code"] == 0 and procs[b.pid]["after"] == "applied" and res["changed"] is True, procs
        assert b.ask("v") == rt.PATCHED
        assert a.ask("unpark") == "unparked" and a.ask("v") == rt.ORIGINAL

        # A patch for another build of the target runs in no process here: nothing to do, not a failure
        # (a fleet's hosts need not all run the target).
        (tmp_path / "other").mkdir()
        other = rt.make_patch(rt.build_target("\nint ansible_other_build;\n"), tmp_path / "other")
        rc, res = _play(tmp_path, other)
        assert rc == 0 and not res.get("failed") and res["changed"] is False and res["processes"] == [], res
