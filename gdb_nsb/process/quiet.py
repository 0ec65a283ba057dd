"""An nsb-* command at the GDB prompt shows only its own output; the user's view is as before.

The tool's own stops (the injected system calls' ends, run windows) are
stops to GDB: it would print them with a frame line, evaluate the
``display`` expressions, run ``hook-stop`` and announce threads that start
or exit.  For the command's duration (GDB 13.1, measured):

* ``suppress-cli-notifications on`` (GDB 12+): no stop printing, no frame
  line, no ``display`` evaluated;
* ``print thread-events off``: no "[New Thread ...]" / "[Thread ... exited]";
* the user's ``hook-stop`` is emptied and put back from ``show user``: GDB
  runs it at every stop and no setting turns that off;
* the selected thread and frame are put back (a stop selects frame 0 of the
  thread that stopped);
* a signal stop is printed whatever the settings ("received signal ..."):
  run windows end at a catchpoint of ours instead (``sigstop.caught``).

The settings are the ``QUIET`` row of ``session_state``'s table.

``gdb.events.stop`` handlers of other extensions cannot be reached from
here: they still see the stops of ``nsb-patch``'s injected calls and of run
windows (README, "GDB sessions").  When a user breakpoint ends a run window
(StoppedByUser) the process stays where it stopped: that thread and its
frame stay selected and the stop is shown as GDB shows one.
"""

import contextlib

import gdb

from gdb_nsb.errors import StoppedByUser
from gdb_nsb.process.session_state import QUIET, changed, define_hook, user_hook


class _Selection:
    """The user's selected thread and frame, found again also when GDB made new objects for them: ``nsb-check``
    detaches and attaches again between looks (``reattach``), which invalidates every thread and frame."""

    def __init__(self):
        self.thread = gdb.selected_thread()
        self.lwp = self.thread.ptid[1] if self.thread is not None else None
        self.frame, self.level = None, 0
        if self.thread is None:
            return
        try:
            self.frame = gdb.selected_frame()
            f = gdb.newest_frame()
        except gdb.error:
            return  # no frames (the process is gone): nothing to select again
        while f is not None and f != self.frame:
            self.level += 1
            f = f.older()

    def restore(self):
        thread = self.thread if self.thread is not None and self.thread.is_valid() else _thread_of(self.lwp)
        if thread is None:
            return
        thread.switch()
        if self.frame is not None and self.frame.is_valid():
            self.frame.select()
            return
        f = gdb.newest_frame()
        for _ in range(self.level):
            older = f.older()
            if older is None:
                break
            f = older
        f.select()


def _thread_of(lwp):
    if lwp is None:
        return None
    return next((t for t in gdb.selected_inferior().threads() if t.is_valid() and t.ptid[1] == lwp), None)


class quiet_command:
    """Context of one nsb-* command: the tool's stops are not shown, the user's view is put back, except
    when a user breakpoint stopped the process (StoppedByUser): ``report_stop`` then shows that stop."""

    def __enter__(self):
        self.selection = _Selection()
        with contextlib.ExitStack() as stack:
            stack.enter_context(changed(QUIET))
            hook = user_hook()
            if hook is not None:
                define_hook([])
                stack.callback(define_hook, hook)
            self.put_back = stack.pop_all()
        return self

    def __exit__(self, exc_type, exc, tb):
        self.put_back.close()
        stopped_by_user = exc_type is not None and issubclass(exc_type, StoppedByUser)
        if not stopped_by_user:
            self.selection.restore()
        return False


def report_stop(stopped):
    """Show the stop of StoppedByUser ``stopped`` as GDB does (the command kept it quiet): its thread, innermost
    frame selected (the tool's steps since may have selected others), hook-stop, the frame, the displays."""
    thread = _thread_of(stopped.lwp)
    if thread is not None:
        thread.switch()
    if user_hook() is not None:
        gdb.execute("hook-stop")
    gdb.execute("frame")
    gdb.execute("display")
