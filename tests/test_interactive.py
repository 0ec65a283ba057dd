"""nsb-* commands in an interactive GDB on a terminal (issue 16 item 1).

A real GDB runs on a pty (pexpect), attached to the engine target, with a
``hook-stop``, a ``display`` and a ``gdb.events.stop`` handler that each
count, a breakpoint of the user's and a selected thread and frame.  The
commands print only their own lines, and the user's view is as before.
``gdb.events.stop`` handlers still see nsb-patch's injected calls (README,
"GDB sessions"); none fires during check, list or revert.
"""

import os
import re

import pexpect
import pytest

from targets.engine import Running, build_flavor, patch_for
from targets.gdbsession import LOADER

pytestmark = [pytest.mark.gdb, pytest.mark.timeout(240)]

PROMPT = "(gdb) "
NOISE = re.compile(r"received signal|^#\d|\[New Thread|\[Thread .* exited|^\d+: \$disp|^\d+\t", re.M)


class Gdb:
    """GDB on a pty, killed at exit."""

    def __init__(self, pid):
        env = dict(os.environ, TERM="dumb")
        self.p = pexpect.spawn("gdb", ["-nx", "-q", "-iex", "set debuginfod enabled off", "-iex",
                                       "set style enabled off", "-iex", "set pagination off", "-iex",
                                       "source " + LOADER, "-p", str(pid)],
                               encoding="utf-8", timeout=90, dimensions=(50, 400), env=env)
        self.p.expect_exact(PROMPT)

    def run(self, command):
        """The output of one command typed at the prompt (without the echoed command line)."""
        self.p.sendline(command)
        self.p.expect_exact(PROMPT)
        out = self.p.before.replace("\r\n", "\n")
        return out.split("\n", 1)[1] if "\n" in out else ""

    def value(self, expr):
        out = self.run("output %s" % expr)
        return int(out.strip())

    def close(self):
        """Detach (the target keeps running) and quit; killed if it does not."""
        try:
            if self.p.isalive():
                self.run("detach")
                self.p.sendline("quit")
                self.p.expect(pexpect.EOF, timeout=20)
        finally:
            self.p.terminate(force=True)


@pytest.fixture
def target(tmp_path):
    f = build_flavor("pie")
    with Running(f, tmp_path) as t:
        yield f, t


def _view(g):
    """What the user sees of the session's state.  (GDB says a source file is missing the first time it looks
    for it after reading the symbols, as after check's attach again, and "in FILE" later: the same view.)"""
    return {c: re.sub(r"^(\d+)\t(\S+): No such file or directory\.$", r"\1\tin \2", g.run(c), flags=re.M)
            for c in ("thread", "frame", "info breakpoints", "info display", "show user hook-stop")}


def _user_setup(g):
    g.run("set $hooks = 0")
    g.run("set $disp = 0")
    g.run("define hook-stop\nset $hooks = $hooks + 1\nend")
    g.run("display $disp++")
    g.run("python import builtins; builtins.nsb_stops = []")
    g.run("python gdb.events.stop.connect(lambda ev: builtins.nsb_stops.append(type(ev).__name__))")
    g.run("break abort")
    g.run("thread 2")
    g.run("frame 1")
    assert g.value("$disp") == 1


def _stops(g):
    return int(g.run("python print(len(builtins.nsb_stops))").strip())


def test_commands_print_only_their_own_output(target):
    f, t = target
    patch = patch_for(f, "plus100")
    g = Gdb(t.pid)
    try:
        _quiet_commands(g, patch)
    finally:
        g.close()
    assert t.value() == t.expect(0) and t.stats()["unexpected"] == 0


def _quiet_commands(g, patch):
    _user_setup(g)
    view = _view(g)
    assert "#1 " in view["frame"] and "Current thread is 2 " in view["thread"], view
    outputs = {}
    stops = {}
    for name, command in (("patch", "nsb-patch " + patch), ("check", "nsb-check " + patch), ("list", "nsb-list"),
                          ("revert", "nsb-revert " + patch), ("check2", "nsb-check " + patch)):
        before = _stops(g)
        outputs[name] = g.run(command)
        stops[name] = _stops(g) - before
    assert "applied to target-pie" in outputs["patch"] and "is applied" in outputs["check"], outputs
    assert "active" in outputs["list"] and "reverted" in outputs["revert"], outputs
    assert "could be applied now" in outputs["check2"], outputs
    for name, out in outputs.items():
        assert not NOISE.search(out), (name, out)
    assert g.value("$hooks") == 0 and g.value("$disp") == 1, outputs
    # Documented: Python stop handlers see the injected calls' stops of nsb-patch, and nothing else.
    assert stops["patch"] > 0 and stops["check"] == stops["list"] == stops["revert"] == stops["check2"] == 0, stops
    assert _view(g) == view
    # The user's hook-stop and displays still work at the user's own stops.
    g.run("stepi")
    assert g.value("$hooks") == 1 and g.value("$disp") >= 2


def test_busy_at_the_prompt_does_not_resume(target):
    f, t = target
    patch = patch_for(f, "parked")
    assert t.ask("park") == "parked"
    g2 = Gdb(t.pid)
    try:
        _user_setup(g2)
        view = _view(g2)
        calls = g2.value("calls[0]+calls[1]+calls[2]+calls[3]")
        out = g2.run("nsb-patch " + patch)
        assert "busy" in out or "no safe point" in out, out
        assert "set nsb run-windows on" in out and "parked" in out, out
        assert g2.value("calls[0]+calls[1]+calls[2]+calls[3]") == calls  # never resumed
        assert not NOISE.search(out), out
        assert _view(g2) == view and g2.value("$hooks") == 0
        # check at the prompt: one look, which says so.
        out = g2.run("nsb-check " + patch)
        assert "busy at this instant" in out and "parked" in out, out
        assert g2.value("calls[0]+calls[1]+calls[2]+calls[3]") == calls
        # With the setting, run windows: their stops print nothing either (GDB 13 prints every signal stop,
        # so a window ends at a catchpoint of ours, sigstop.caught).
        g2.run("set nsb run-windows on")
        out = g2.run("nsb-patch --retries 3 " + patch)
        assert "no safe point after 3" in out and not NOISE.search(out), out
        assert _view(g2) == view and g2.value("$hooks") == 0 and g2.value("$disp") == 1, out
        # check's later looks detach and attach again (reattach): new thread and frame objects, the same view.
        out = g2.run("nsb-check --retries 3 " + patch)
        assert "busy at each of 3 looks" in out and not NOISE.search(out), out
        assert _view(g2) == view and g2.value("$hooks") == 0 and g2.value("$disp") == 1, out
        # A user breakpoint hit in a run window ends the command, shown as a stop.
        g2.run("break compute")
        g2.run("thread 1")  # selected: a thread that never calls compute, in an outer frame the stop must not keep
        g2.run("frame 1")
        out = g2.run("nsb-patch " + patch)
        assert "stopped by" in out.lower() or "during a run window" in out, out
        assert re.search(r"^#0 .*compute", out, re.M), out
        assert "SIGTRAP" not in out and "received signal" not in out and "[New Thread" not in out, out
        assert g2.value("$hooks") == 1, out
        assert re.search(r"compute", g2.run("frame")), out
    finally:
        g2.close()


def test_readme_names_what_an_interactive_session_still_shows():
    """Item 1 allows stop handlers that fire if the README names them; it also names the one stop report left,
    GDB's 'received signal SIGSTOP' when a callback overruns its time limit (an inferior call ends only so)."""
    with open(os.path.join(os.path.dirname(LOADER), "README.md")) as f:
        text = f.read()
    section = text[text.index("### GDB sessions"):]
    section = section[:section.index("\n#", 1)]
    assert "gdb.events.stop" in section and "nsb-patch" in section, section
    assert "received signal" in section and "time limit" in section and "set nsb run-windows" in section, section
