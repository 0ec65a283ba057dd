"""The GDB face of the extension: `nsb gdb`, help texts, settings, one-line errors."""

import os
import subprocess

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


def test_settings_are_gdb_parameters():
    r = nsb_gdb("show nsb retries", "set nsb retries 7", "show nsb retries", "set nsb strategy runout",
                "show nsb strategy", "show nsb breakpoints", "set nsb breakpoints disable", "show nsb breakpoints")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["Safe-point checks is 25.", "Safe-point checks is 7.",
                                     "Safe-point strategy is runout.", "Breakpoint policy is refuse.",
                                     "Breakpoint policy is disable."]


def test_errors_are_one_line():
    r = nsb_gdb("nsb-list", "nsb-patch --no-such-option x.so", "nsb-patch /nonexistent/fix.so")
    errs = [l for l in r.stderr.splitlines() if l.strip()]
    assert errs == ["GDB has no live process (attach or run one first)",
                    "nsb-patch: unrecognized arguments: --no-such-option",
                    "patch file not found: /nonexistent/fix.so"], r.stderr
