"""The GDB face of the extension: `nsb gdb`, help texts, settings, one-line errors."""

import os
import re
import subprocess

from gdb_nsb import options

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def nsb_gdb(*ex):
    args = [os.path.join(ROOT, "nsb"), "gdb", "-nx", "-batch"]
    for e in ex:
        args += ["-ex", e]
    return subprocess.run(args, capture_output=True, text=True, timeout=120)


def test_nsb_gdb_passes_options_to_gdb_and_loads_the_commands():
    r = nsb_gdb("help nsb-patch", "help nsb-revert", "help nsb-list", "help nsb-check")
    assert r.returncode == 0, r.stderr
    assert "Apply a live patch to the process being debugged." in r.stdout
    assert "Take an applied live patch back." in r.stdout
    assert "List the live patches" in r.stdout
    assert "Check a live patch" in r.stdout


def test_gdb_help_is_the_declared_help():
    """`help nsb-X` shows exactly the help built from gdb_nsb/options.py (its parser's help), and
    `help set nsb NAME` the setting's declared text."""
    names = sorted(options.COMMANDS)
    marks = []
    for name in names:
        marks += ["echo ==nsb-%s==\\n" % name, "help nsb-" + name]
    marks += ["echo ==set-debug==\\n", "help set nsb debug"]
    r = nsb_gdb(*marks)
    assert r.returncode == 0, r.stderr
    shown = dict(re.findall(r"==([a-z-]+)==\n(.*?)(?=\n==|\Z)", r.stdout, re.S))
    for name in names:
        assert shown["nsb-" + name].rstrip() == options.gdb_help(name).rstrip(), name
    debug = options.SETTINGS["debug"]
    assert shown["set-debug"].splitlines()[:3] == [debug.set_doc] + debug.doc.splitlines()


def test_settings_are_gdb_parameters():
    r = nsb_gdb("show nsb retries", "set nsb retries 7", "show nsb retries", "set nsb strategy run-out",
                "show nsb strategy", "show nsb breakpoints", "set nsb breakpoints disable", "show nsb breakpoints")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["Safe-point checks is 25.", "Safe-point checks is 7.",
                                     "Safe-point strategy is run-out.", "Breakpoint policy is refuse.",
                                     "Breakpoint policy is disable."]


def test_errors_are_one_line():
    r = nsb_gdb("nsb-list", "nsb-patch --no-such-option x.so", "nsb-patch /nonexistent/fix.so")
    errs = [l for l in r.stderr.splitlines() if l.strip()]
    assert errs == ["GDB has no live process (attach or run one first)",
                    "nsb-patch: unrecognized arguments: --no-such-option",
                    "patch file not found: /nonexistent/fix.so"], r.stderr


BUG = 'python import gdb_nsb.process.engine as e; e.list_patches = lambda opts: {}["boom"]'


def test_internal_error_is_one_line_and_shows_its_traceback_with_debug_on():
    off = nsb_gdb(BUG, "nsb-list")
    assert [l for l in off.stderr.splitlines() if l.strip()] == [
        "internal error: KeyError: 'boom' (set nsb debug on shows its traceback)"], off.stderr
    on = nsb_gdb(BUG, "set nsb debug on", "nsb-list")
    lines = [l for l in on.stderr.splitlines() if l.strip()]
    assert lines[0] == "Traceback (most recent call last):", on.stderr
    assert any("nsb_list.py" in l and "in operate" in l for l in lines), on.stderr
    assert lines[-2:] == ["KeyError: 'boom'", "internal error: KeyError: 'boom'"], on.stderr


def test_user_errors_stay_one_line_with_debug_on():
    r = nsb_gdb("set nsb debug on", "nsb-list", "nsb-patch --strategy runout x.so", "nsb-patch /nonexistent/fix.so")
    errs = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(errs) == 3, r.stderr
    assert errs[0] == "GDB has no live process (attach or run one first)"
    assert errs[1].startswith("nsb-patch: argument --strategy: invalid choice: 'runout' (choose from ")
    assert errs[2] == "patch file not found: /nonexistent/fix.so"
