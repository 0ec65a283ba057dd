"""StopLog's reading of stop events (pure: a stand-in ``gdb`` module).  A run window ends at a catchpoint of ours
(sigstop.caught); GDB 13.1 reports its stop as the signal's SignalEvent, GDBs that report a catchpoint's stop as a
BreakpointEvent must log it as that signal too, never as a user's breakpoint (which ends the operation)."""

import types

import pytest

import targets as T


class Thread:
    def __init__(self, lwp):
        self.ptid = (1, lwp, 0)


class BreakpointEvent:
    def __init__(self, lwp, numbers):
        self.inferior_thread = Thread(lwp)
        self.breakpoints = [types.SimpleNamespace(number=n) for n in numbers]


class SignalEvent:
    def __init__(self, lwp, name):
        self.inferior_thread = Thread(lwp)
        self.stop_signal = name


@pytest.fixture
def stop_log(monkeypatch):
    with T.without_gdb(monkeypatch, "gdb_nsb.process.stop_log") as module:
        import gdb
        gdb.BreakpointEvent, gdb.SignalEvent = BreakpointEvent, SignalEvent
        gdb.selected_thread = lambda: None
        yield module


def test_a_catchpoint_of_ours_is_its_signal_stop(stop_log):
    stop_log.CATCHPOINTS[7] = "SIGSTOP"
    try:
        log = stop_log.StopLog()
        log._on_stop(BreakpointEvent(100, [7]))
        assert log.got_sigstop(100) and log.last_is_sigstop(100)
        assert stop_log.window_result(0.01, log, ours=()).events == [("signal", 100, "SIGSTOP")]
        # The same stop reported as the signal (GDB 13.1): the same log.
        log2 = stop_log.StopLog()
        log2._on_stop(SignalEvent(100, "SIGSTOP"))
        assert log2.events == log.events
        # A user's breakpoint hit at the same stop still ends the operation, named alone.
        log._on_stop(BreakpointEvent(101, [7, 3]))
        with pytest.raises(stop_log.StoppedByUser) as e:
            stop_log.window_result(0.01, log, ours=())
        assert "breakpoint 3 stopped LWP 101" in str(e.value) and e.value.lwp == 101
    finally:
        del stop_log.CATCHPOINTS[7]


def test_without_catchpoints_a_breakpoint_is_the_users(stop_log):
    log = stop_log.StopLog()
    log._on_stop(BreakpointEvent(100, [7]))
    with pytest.raises(stop_log.StoppedByUser):
        stop_log.window_result(0.01, log, ours=())
