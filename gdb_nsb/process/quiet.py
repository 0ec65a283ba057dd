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
  thread that stopped).

``gdb.events.stop`` handlers of other extensions cannot be reached from
here: they still see the stops of ``nsb-patch``'s injected calls and of run
windows (README, "GDB sessions").  When a user breakpoint ends a run window
(StoppedByUser) the process stays where it stopped: that thread and its
frame stay selected and the stop is shown as GDB shows one.
"""

import gdb

_HOOK = "hook-stop"


def _setting(name):
    """The current value of GDB setting ``name`` as ``set`` takes it, or None when this GDB lacks it."""
    try:
        value = gdb.parameter(name)
    except (RuntimeError, gdb.error):
        return None
    return {True: "on", False: "off", None: "auto"}.get(value, value) if isinstance(value, (bool, type(None))) \
        else str(value)


def _user_hook():
    """The body of the user's hook-stop (lines as ``define`` takes them), or None when there is none."""
    try:
        text = gdb.execute("show user %s" % _HOOK, to_string=True)
    except gdb.error:
        return None
    lines = text.splitlines()[1:]
    body = [l[2:] if l.startswith("  ") else l for l in lines]
    while body and not body[-1].strip():
        body.pop()
    return body if body else None


def _define_hook(body):
    confirm = _setting("confirm")
    gdb.execute("set confirm off", to_string=True)
    try:
        gdb.execute("\n".join(["define %s" % _HOOK] + list(body) + ["end"]), to_string=True)
    finally:
        gdb.execute("set confirm %s" % confirm, to_string=True)


def _selected():
    thread = gdb.selected_thread()
    try:
        frame = gdb.selected_frame() if thread is not None else None
    except gdb.error:
        frame = None
    return thread, frame


class quiet_command:
    """Context of one nsb-* command: the tool's stops are not shown, the user's view is put back.

    ``keep_selection()`` (called when a user breakpoint stopped the process)
    leaves GDB's selection where that stop put it."""

    def __enter__(self):
        self.thread, self.frame = _selected()
        self.keep = False
        self.settings = []
        for name, value in (("suppress-cli-notifications", "on"), ("print thread-events", "off")):
            old = _setting(name)
            if old is not None and old != value:
                gdb.execute("set %s %s" % (name, value), to_string=True)
                self.settings.append((name, old))
        self.hook = _user_hook()
        if self.hook is not None:
            _define_hook([])
        return self

    def keep_selection(self):
        self.keep = True

    def __exit__(self, *exc):
        if self.hook is not None:
            _define_hook(self.hook)
        for name, old in reversed(self.settings):
            gdb.execute("set %s %s" % (name, old), to_string=True)
        if not self.keep and self.thread is not None and self.thread.is_valid():
            self.thread.switch()
            if self.frame is not None and self.frame.is_valid():
                self.frame.select()
        return False


def report_stop():
    """Show a stop of the user's as GDB does (the command kept it quiet): hook-stop, the frame, the displays."""
    if _user_hook() is not None:
        gdb.execute(_HOOK)
    gdb.execute("frame")
    gdb.execute("display")
