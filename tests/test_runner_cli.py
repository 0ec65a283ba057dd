"""The runner's command line without GDB sessions: usage errors, bad patch files, --help, exit-code table."""

import inspect
import json
import os
import subprocess
import sys
import time

import pytest

import targets as T
from gdb_nsb import errors, procstate
from gdb_nsb.standalone import runner

pytestmark = pytest.mark.timeout(300)


def test_exit_code_table_matches_errors_module():
    table = {code: (meaning, reserved) for code, meaning, reserved in errors.exit_codes()}
    assert sorted(table) == list(range(22))
    classes = [c for _n, c in inspect.getmembers(errors, inspect.isclass) if issubclass(c, errors.NsbError)]
    for cls in classes:
        assert cls.exit_code in table, cls
    assert errors.BusyError.exit_code == 3 and errors.TimeoutExpired.exit_code == 15
    assert errors.NotAppliedError.exit_code == 2 and errors.UsageError.exit_code == 1
    assert errors.StoppedByUser.exit_code == 21 and not errors.StoppedByUser.reserved
    assert errors.CallbackRefused.exit_code == 19 and errors.DependencyError.exit_code == 20
    assert not [c for c, (_m, r) in table.items() if r] and not errors.DependencyError.reserved
    assert all(m and "\n" not in m for m, _r in table.values())


def test_exit_codes_refuse_a_code_declared_twice(monkeypatch):
    class Twin(errors.NsbError):
        exit_code = errors.BusyError.exit_code
        meaning = "a second busy"
    monkeypatch.setattr(Twin, "__module__", errors.__name__)
    with pytest.raises(ValueError, match="exit code 3 declared twice"):
        errors.exit_codes()


def test_exit_codes_refuse_a_code_without_its_meaning(monkeypatch):
    class Mute(errors.NsbError):
        exit_code = 99
    monkeypatch.setattr(Mute, "__module__", errors.__name__)
    with pytest.raises(ValueError, match="Mute declares exit code 99 without its meaning"):
        errors.exit_codes()


def test_readme_table_is_the_one_errors_declares():
    with open(os.path.join(T.ROOT, "README.md")) as f:
        text = f.read()
    start = text.index("| code | meaning |")
    rows = text[start:text.index("\n\n", start)].splitlines()[2:]
    want = ["| %d | %s%s |" % (c, "reserved: " if r else "", m) for c, m, r in errors.exit_codes()]
    assert rows == want, "README's exit-code table should read:\n" + "\n".join(want)


def test_result_schema_admits_every_exit_code():
    with open(T.SCHEMA) as f:
        schema = json.load(f)
    top = schema["properties"]["exit_code"]
    per_process = schema["properties"]["processes"]["items"]["properties"]["code"]
    codes = [c for c, _m, _r in errors.exit_codes()]
    for field in (top, per_process):
        assert (field["minimum"], field["maximum"]) == (min(codes), max(codes))


@pytest.mark.parametrize("argv", [["--help"], ["patch", "--help"], ["revert", "--help"], ["list", "--help"],
                                  ["check", "--help"]])
def test_help_documents_every_exit_code(argv):
    r = T.nsb(*argv)
    assert r.returncode == 0
    for code, meaning, reserved in errors.exit_codes():
        line = "%3d  %s%s" % (code, "reserved: " if reserved else "", meaning.replace("`", ""))
        assert line in r.stdout, (code, r.stdout)


def test_usage_errors_are_1(tmp_path):
    cases = [["patch", "-f", "/bin/true"],                  # no process
             ["patch", "-p", "12x", "-f", "/bin/true"],     # not a pid
             ["patch", "-p", "1"],                           # no patch
             ["revert", "-p", "1"],
             ["check", "-p", "1"],
             ["patch", "-p", "1", "-f", "x", "--timeout", "0"],
             ["patch", "-p", "1", "-f", "x", "--retries", "0"],
             ["patch", "-p", "1", "-f", "x", "--bogus"],
             ["frobnicate"]]
    for argv in cases:
        r = T.nsb(*argv)
        assert r.returncode == 1, (argv, r.stdout, r.stderr)
        assert r.stderr.strip(), argv
    r = T.nsb()
    assert r.returncode == 1 and "COMMAND" in r.stdout
    run = T.nsb("patch", "-f", "/bin/true", "--json")
    rc, doc = run.returncode, run.doc
    assert rc == 1 and doc["processes"] == [] and "-p PID" in doc["message"]
    run = T.nsb("patch", "-p", "1", "-f", "x", "--timeout", "-3", "--json")
    rc, doc = run.returncode, run.doc
    assert rc == 1 and doc["result"] == "error"


def test_bad_patch_files_are_9_before_any_process_is_touched(tmp_path):
    """Checked first: even with a pid that does not exist, the answer is 9 (no GDB was started)."""
    not_elf = tmp_path / "notelf.so"
    not_elf.write_text("hello\n")
    cases = {"/nonexistent/patch.so": "patch file not found",
             str(not_elf): "not an ELF file",
             "/bin/true": "no vzpatch section"}
    for path, text in cases.items():
        for cmd in ("patch", "check"):
            started = time.monotonic()
            run = T.nsb(cmd, "-p", "999999999", "-f", path, "--json")
            rc, doc = run.returncode, run.doc
            assert rc == 9 and doc["processes"] == [] and text in doc["message"], (cmd, path, doc)
            assert time.monotonic() - started < 60
        r = T.nsb("patch", "-p", "999999999", "-f", path)
        assert r.returncode == 9 and r.stdout == "" and text in r.stderr
    run = T.nsb("revert", "-p", "999999999", "-f", "/nonexistent/patch.so", "--json")
    rc, doc = run.returncode, run.doc
    assert rc == 9 and "not a build-id" in doc["message"]
    run = T.nsb("revert", "-p", "999999999", "-f", str(not_elf), "--json")
    rc, doc = run.returncode, run.doc
    assert rc == 9, doc


def test_parse_pids():
    assert runner.parse_pids(["1,2", "3", "2", " 4 ,"]) == [1, 2, 3, 4]
    for bad in (["0"], ["-1"], ["a"], ["1,b"]):
        with pytest.raises(errors.UsageError):
            runner.parse_pids(bad)


def test_grace_seconds_from_environment(monkeypatch):
    monkeypatch.delenv("NSB_GRACE_SECONDS", raising=False)
    assert runner.grace_seconds() == runner.DEFAULT_GRACE_SECONDS
    monkeypatch.setenv("NSB_GRACE_SECONDS", "0.5")
    assert runner.grace_seconds() == 0.5
    monkeypatch.setenv("NSB_GRACE_SECONDS", "soon")
    with pytest.raises(errors.UsageError):
        runner.grace_seconds()


def test_patch_command_does_not_import_gdb_or_the_generator():
    """Latency: `nsb patch` loads only the runner and the patch reader (GDB does the rest)."""
    code = ("import sys\n"
            "from gdb_nsb.standalone import cli\n"
            "try:\n"
            "    cli.main(['patch', '-p', '999999999', '-f', '/bin/true'])\n"
            "except SystemExit:\n"
            "    pass\n"
            "print(sorted(m for m in sys.modules if m.startswith('gdb_nsb')))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=T.ROOT)
    mods = json.loads(r.stdout.strip().splitlines()[-1].replace("'", '"'))
    assert "gdb_nsb.standalone.patch_cmd" in mods
    for unwanted in ("gdb_nsb.generator", "gdb_nsb.standalone.demo", "gdb_nsb.standalone.generate",
                     "gdb_nsb.elf.dwarf", "gdb_nsb.binder", "gdb_nsb.process"):
        assert not any(m == unwanted or m.startswith(unwanted + ".") for m in mods), (unwanted, mods)


def test_settled_at_once_after_a_clean_exit_unless_a_stop_signal_is_pending(monkeypatch):
    """ensure_running trusts a clean GDB exit only when no thread is stopped and no stop signal is pending."""
    import signal
    import sys
    sleeps = []
    real_sleep = time.sleep
    monkeypatch.setattr(procstate.time, "sleep", lambda s: (sleeps.append(s), real_sleep(s)))
    code = ("import signal, sys, time; signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTSTP});"
            "print('ready', flush=True); time.sleep(60)")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "ready"
        states = procstate.thread_states(p.pid)
        assert states and not procstate.stop_signal_pending(p.pid, states)
        assert procstate.ensure_running(p.pid, clean_exit=True) == states
        assert sleeps == []  # settled at once
        procstate.ensure_running(p.pid)
        assert len(sleeps) >= 2  # without a clean exit: watched until calm
        del sleeps[:]
        os.kill(p.pid, signal.SIGTSTP)  # blocked: stays pending, stops the process whenever unblocked
        assert rt_wait(lambda: procstate.stop_signal_pending(p.pid, procstate.thread_states(p.pid)))
        procstate.ensure_running(p.pid, clean_exit=True)
        assert len(sleeps) >= 2  # a pending stop signal: watched, not trusted
        assert p.poll() is None
    finally:
        p.kill()
        p.wait(10)


def rt_wait(cond, timeout=5.0):
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            return False
        time.sleep(0.01)
    return True


def test_what_the_process_did_when_gdb_died():
    """After GDB died without a result, the runner tells an exit or an exec from /proc; NULs are dropped."""
    import sys
    assert runner._gdb_failure_message("x\nRecursive internal problem.\n\0Recursive internal problem.\n\0") == \
        "GDB failed without a result: Recursive internal problem."
    # Read once the child runs Python: read right after the fork, its image was the forked copy's, and
    # its exec showed as "executed a new program" (CI, once).
    p = subprocess.Popen([sys.executable, "-c", "import time; print('up', flush=True); time.sleep(60)"],
                         stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline() == "up\n"
        before = runner.process_image(p.pid)
        assert before is not None and runner._vanished_during(p.pid, before) is None
        moved = (before[0], before[1], ("0-1",))  # another stack/vDSO: a new program image
        cls, what = runner._vanished_during(p.pid, moved)
        assert cls is errors.TargetExecError and what == "executed a new program"
    finally:
        p.kill()
        p.wait(10)
    cls, what = runner._vanished_during(p.pid, before)
    assert cls is errors.TargetExitedError and what == "exited"


@pytest.mark.parametrize("argv", [["list", "--json"], ["check", "--help"]])
def test_a_reader_that_went_away_is_no_traceback(argv):
    """`nsb list --json | head`: stdout's reader closed; the runner stops without a Python traceback and
    without claiming success (its output was lost)."""
    r, w = os.pipe()
    os.close(r)
    try:
        p = T.start_nsb(*argv, stdout=w)
    finally:
        os.close(w)
    try:
        _out, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    assert p.returncode == 1, (p.returncode, err)
