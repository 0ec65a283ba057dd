"""What the tool may change in a GDB session, declared in one place, and how each change is put back.

A step of the tool changes GDB's state for its own duration: a quiet command,
the unwinding of every stack, an injected system call, an inferior call, a run
window.  Each step changes GDB settings only through :func:`changed` with its
row of the table below, and signal handling only through :func:`signals_handled`;
both put the previous values back when the step ends (only what they changed).
``faults`` point ``restore-settings`` fires just before such a put-back: a
``fail`` there leaves the step's changes in place, as a GDB error would.

A session serving several processes (:mod:`gdb_nsb.process.many`) takes a
:func:`snapshot` of everything listed here before the first process and
:func:`restore`\\ s it after each one, so that whatever one process's run left
changed (a put-back that failed, the fast attach's debug-file directory) never
reaches the next: each process starts with the state a fresh GDB gives.
"""

import contextlib
import re

import gdb

from gdb_nsb.process import faults

# --- the table ------------------------------------------------------------------------------------------
# GDB settings, by the step that changes them, with the value the step sets.

# nsb-* commands (quiet.quiet_command): no stop printing, frame lines, displays or thread events.
QUIET = (("suppress-cli-notifications", "on"), ("print thread-events", "off"))
# Redefining hook-stop, adding or replacing symbol files: GDB would ask.
NO_CONFIRM = (("confirm", "off"),)
# Collecting every thread's stack (stacks.collect_stacks): walks end only at a thread's real outermost frame.
UNWIND_EVERYTHING = (("backtrace past-main", "on"), ("backtrace past-entry", "on"), ("backtrace limit", "unlimited"))
# Injected system calls (syscalls.SyscallInjector.session): one thread steps in place (a displaced
# step would run the stub's copy elsewhere).
INJECTED_CALL = (("scheduler-locking", "on"), ("displaced-stepping", "off"))
# Draining a run window's SIGSTOP (sigstop.drain_sigstop): that thread alone steps.
ONE_THREAD_STEPS = (("scheduler-locking", "on"),)
# Callbacks (callbacks.run_callback): the process runs while the call does, a signal unwinds the call.
CALLBACK_CALL = (("scheduler-locking", "off"), ("unwindonsignal", "on"), ("unwind-on-terminating-exception", "on"))
# IFUNC resolvers (ifunc.run_resolvers): inside the stop, every other thread kept stopped.
RESOLVER_CALL = (("scheduler-locking", "on"), ("unwindonsignal", "on"), ("unwind-on-terminating-exception", "on"))
# Run windows (sigstop.sigstop_handling): a GDB internal error (GDB 13 has some when threads vanish at an
# exit or exec) must become an error we can handle, not GDB's death: no quit, no core file, and no
# backtrace (printing it while ``to_string`` captures the output made GDB die of "Recursive internal
# problem").  ``maint`` settings.
SURVIVABLE_INTERNAL_ERRORS = (("maint internal-error quit", "no"), ("maint internal-error corefile", "no"),
                              ("maint internal-error backtrace", "off"))
# The runner's fast attach (fastattach.prepare): separate debug files skipped.  Not put back by that
# step (its session attaches once); many.py puts it back before the next process.
NO_DEBUG_FILES = (("debug-file-directory", ""),)

_ROWS = (QUIET, NO_CONFIRM, UNWIND_EVERYTHING, INJECTED_CALL, ONE_THREAD_STEPS, CALLBACK_CALL, RESOLVER_CALL,
         SURVIVABLE_INTERNAL_ERRORS, NO_DEBUG_FILES)
# Every setting above, with what GDB's Python returns None for ("unlimited" for numbers, else "auto").
SETTINGS = {name: ("unlimited" if value == "unlimited" or value.isdigit() else "auto")
            for row in _ROWS for name, value in row}

# Besides settings the tool changes, each time put back by the step that changed it:
# * signal handling (``handle``): every signal stops inside injected system calls, the program's own
#   pass without stopping during callbacks, SIGSTOP (or the remote alarm's signal) stops and is not
#   passed during run windows -- :func:`signals_handled`;
# * breakpoints: a ``catch exec`` and the run-out breakpoints of the safe-point wait (deleted after),
#   the end breakpoint of an injected call, user breakpoints disabled during inferior calls and at
#   patched entries on a failed apply -- the snapshot keeps their numbers and enabled state;
# * the user's ``hook-stop``: emptied for a quiet command;
# * the selected thread and frame: put back by each command (and a process's inferior is removed
#   after it, many.py).


# --- settings -------------------------------------------------------------------------------------------

def read(name):
    """The setting's value as ``set`` takes it, or None when this GDB lacks it."""
    if name.startswith("maint "):
        # 'Whether GDB will quit when an internal-error is detected is "ask".' / '... is on.'
        try:
            shown = gdb.execute("maint show %s" % name[6:], to_string=True).strip()
        except gdb.error:
            return None
        m = re.search(r' is "([^"]*)"\.?$| is (\S+?)\.?$', shown)
        return (m.group(1) or m.group(2)) if m else None
    try:
        value = gdb.parameter(name)
    except (RuntimeError, gdb.error):
        return None
    if value is None:
        return SETTINGS[name]
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def write(name, value):
    if name.startswith("maint "):
        gdb.execute("maint set %s %s" % (name[6:], value), to_string=True)
    else:
        gdb.execute("set %s %s" % (name, value), to_string=True)


@contextlib.contextmanager
def changed(row):
    """The settings of ``row`` (one of the table's) for the block; the previous values put back after."""
    saved = []
    try:
        for name, value in row:
            if name not in SETTINGS:
                raise KeyError("%s is not in the table of settings the tool may change" % name)
            old = read(name)
            if old is not None and old != value:
                write(name, value)
                saved.append((name, old))
        yield
    finally:
        if saved:
            faults.point("restore-settings", ", ".join(name for name, _ in saved))
        for name, old in reversed(saved):
            write(name, old)


# --- signal handling ------------------------------------------------------------------------------------

_SIGNAL_LINE = re.compile(r"^(SIG\w+|EXC_\w+)\s+(Yes|No)\s+(Yes|No)\s+(Yes|No)\s")


def signal_table(name=None):
    """{signal: (stop, print, pass)} from ``info signals`` (of one signal with ``name``)."""
    table = {}
    text = gdb.execute("info signals" + (" " + name if name else ""), to_string=True)
    for line in text.splitlines():
        m = _SIGNAL_LINE.match(line)
        if m:
            table[m.group(1)] = tuple(x == "Yes" for x in m.group(2, 3, 4))
    return table


def set_handling(handling):
    """``handle`` each {signal: (stop, print, pass)}, one command per distinct disposition."""
    by_flags = {}
    for sig, flags in handling.items():
        by_flags.setdefault(tuple(flags), []).append(sig)
    for (stop, prt, pas), sigs in by_flags.items():
        # All three words, in this order: "stop" implies "print" and "noprint" implies "nostop".
        gdb.execute("handle %s %s %s %s" % (" ".join(sigs), "stop" if stop else "nostop",
                                             "print" if prt else "noprint", "pass" if pas else "nopass"),
                    to_string=True)


@contextlib.contextmanager
def signals_handled(choose, name=None):
    """Signal handling for the block: ``choose(table)`` -> {signal: (stop, print, pass)} given the current
    {signal: (stop, print, pass)} (of signal ``name`` alone when given); the previous handling put back."""
    table = signal_table(name)
    wanted = {sig: tuple(flags) for sig, flags in choose(table).items() if table.get(sig) != tuple(flags)}
    try:
        set_handling(wanted)
        yield
    finally:
        if wanted:
            faults.point("restore-settings", "handle " + " ".join(wanted))
        set_handling({sig: table[sig] for sig in wanted if sig in table})


# --- the whole of it, for a session serving several processes -------------------------------------------

def user_hook(hook="hook-stop"):
    """The body of the user's ``hook`` (lines as ``define`` takes them), or None when there is none."""
    try:
        text = gdb.execute("show user %s" % hook, to_string=True)
    except gdb.error:
        return None
    lines = text.splitlines()[1:]
    body = [l[2:] if l.startswith("  ") else l for l in lines]
    while body and not body[-1].strip():
        body.pop()
    return body if body else None


def define_hook(body, hook="hook-stop"):
    """(Re)define the user's ``hook`` with ``body`` (no lines: an empty hook)."""
    with changed(NO_CONFIRM):
        gdb.execute("\n".join(["define %s" % hook] + list(body) + ["end"]), to_string=True)


def snapshot():
    """Everything the tool may change, as plain data (JSON-able)."""
    return {"settings": {name: read(name) for name in SETTINGS},
            "signals": {sig: list(flags) for sig, flags in signal_table().items()},
            "breakpoints": {str(b.number): b.enabled for b in gdb.breakpoints() or ()},
            "hook-stop": user_hook()}


def restore(saved):
    """Put back what differs from ``saved`` (a :func:`snapshot`); only what differs is set."""
    for name, value in saved["settings"].items():
        if value is not None and read(name) != value:
            write(name, value)
    now = signal_table()
    set_handling({sig: tuple(flags) for sig, flags in saved["signals"].items() if now.get(sig) != tuple(flags)})
    for b in gdb.breakpoints() or ():
        enabled = saved["breakpoints"].get(str(b.number))
        if enabled is None:
            b.delete()
        elif b.enabled != enabled:
            b.enabled = enabled
    hook = user_hook()
    if hook != saved["hook-stop"]:
        define_hook(saved["hook-stop"] or [])
