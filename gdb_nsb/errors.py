"""Typed errors of the core, and the runner's exit-code table.

Every error is one line for the user.  ``exit_code`` is the runner's stable
exit status for that class of failure and ``meaning`` its one line in the
table; commands turn these into ``gdb.GdbError``.  This module is the one
source of the table: ``nsb --help`` is generated from :func:`exit_codes`, and
a test checks that the README's table says the same.  A ``reserved`` code is
declared for work in progress and raised by nothing yet.
"""

DONE_MEANING = "done (`check`: applied)"  # exit code 0, no error


class NsbError(Exception):
    """Base of every error gdb-nsb reports to a user."""

    exit_code = 10  # internal / unclassified failure
    meaning = "internal error or GDB failure"
    reserved = False

    def __str__(self):
        # Exactly one line, whatever the message was built from.
        return " ".join(super().__str__().split())


class UsageError(NsbError):
    """Wrong command-line or command arguments."""

    exit_code = 1
    meaning = "usage error"


class NotAppliedError(NsbError):
    """The patch is not applied (check, revert)."""

    exit_code = 2
    meaning = "not applied (`check`: not applied, applicable now; `revert`: not applied)"


class BusyError(NsbError):
    """No safe point was reached: a thread stays inside a replaced function."""

    exit_code = 3
    meaning = "busy: no safe point within `--retries` or `--timeout` (`check`: not applied, not applicable now)"


class MismatchError(NsbError):
    """Patch and target do not belong together (build-id, entry bytes ...)."""

    exit_code = 4
    meaning = "target/patch mismatch (build-id, entry bytes, symbols)"


class AlreadyAppliedError(NsbError):
    """The patch is already applied."""

    exit_code = 5
    meaning = "already applied"


class ProcessNotFoundError(NsbError):
    """No such process."""

    exit_code = 6
    meaning = "process not found"


class NotAttachableError(NsbError):
    """The process exists but cannot be traced (permissions, other tracer)."""

    exit_code = 7
    meaning = "process not attachable (permissions, another tracer, ptrace_scope)"


class PartialStateError(NsbError):
    """The process holds a half-applied patch."""

    exit_code = 8
    meaning = "partial state found in the process"


class PatchFileError(NsbError):
    """The patch file is missing, not ELF, corrupt, or has no/bad vzpatch section."""

    exit_code = 9
    meaning = "bad patch file (missing, not ELF, no or corrupt `vzpatch` section)"


class ElfError(PatchFileError):
    """An ELF file cannot be read or is not what it should be."""


class DebugInfoError(NsbError):
    """Debug information needed for generation is missing or unusable."""

    exit_code = 11
    meaning = "`generate`: debug information missing or unusable"


class GenerateError(NsbError):
    """The generator refuses a patch (unknown symbol, writable data ...)."""

    exit_code = 12
    meaning = "`generate`: the patch is refused (unknown symbol, writable data ...)"


class UnsupportedError(NsbError):
    """A relocation type, language or construct we do not support."""

    exit_code = 13
    meaning = "unsupported (relocation type, language ...)"


class EnvironmentRefusal(NsbError):
    """The environment forbids the operation (seccomp filter, policy)."""

    exit_code = 14
    meaning = "refused by the environment (seccomp filter, policy)"


class TimeoutExpired(NsbError):
    """The deadline passed; everything was rolled back."""

    exit_code = 15
    meaning = ("timeout: the deadline passed after the safe point (writes rolled back), or GDB "
               "overran it and was killed (see `nsb check`)")


class RegistryCorrupt(NsbError):
    """The in-process registry fails its CRC: read-only mode."""

    exit_code = 16
    meaning = "registry corrupt: read-only mode"


class TargetExitedError(NsbError):
    """The process exited while the operation let it run (between safe-point tries): nothing was written."""

    exit_code = 17
    meaning = "the process exited while the operation let it run between safe-point tries (nothing written)"


class TargetExecError(NsbError):
    """The process executed a new program while the operation let it run: aborted, nothing written."""

    exit_code = 18
    meaning = ("the process executed a new program while the operation let it run (aborted, "
               "nothing written; GDB detached)")


class CallbackRefused(NsbError):
    """The patch's own pre-patch or pre-unpatch callback refused the operation (nothing written)."""

    exit_code = 19
    meaning = ("a callback of the patch refused (non-zero pre-patch/pre-unpatch return: nothing written) or failed "
               "(timed out or crashed: the process runs on, `list` shows \"callback failed\")")


class CallbackFailed(CallbackRefused):
    """A callback of the patch timed out or crashed: the process runs on, in the state the message names
    (``list`` shows "callback failed"); nothing was rolled back silently."""


class DependencyError(NsbError):
    """A patch this one needs is missing, or an applied patch depends on the one being reverted."""

    exit_code = 20
    meaning = "a dependency is missing, or an applied patch depends on this one"


class StoppedByUser(NsbError):
    """A user breakpoint (or watchpoint, catchpoint) stopped the process during a run window."""

    exit_code = 21
    meaning = "stopped by the user: a breakpoint of the user's stopped the process while it ran (it stays there)"

    def __init__(self, message, lwp=None):
        super().__init__(message)
        self.lwp = lwp  # the thread the breakpoint stopped: the one shown, as GDB shows a stop


def _declaring_classes():
    """NsbError and every subclass in this module that declares its own exit code."""
    out, todo = [], [NsbError]
    while todo:
        cls = todo.pop()
        if cls.__module__ == __name__ and "exit_code" in vars(cls):
            out.append(cls)
        todo.extend(cls.__subclasses__())
    return out


def exit_codes():
    """The runner's exit-code table: ``[(code, meaning, reserved)]`` sorted by code, 0 (done) first.

    Raises ValueError when two classes declare the same code or a class lacks its own meaning.
    """
    rows = {0: (DONE_MEANING, False)}
    for cls in _declaring_classes():
        if cls.exit_code in rows:
            raise ValueError("exit code %d declared twice (%s)" % (cls.exit_code, cls.__name__))
        if "meaning" not in vars(cls):
            raise ValueError("%s declares exit code %d without its meaning" % (cls.__name__, cls.exit_code))
        rows[cls.exit_code] = (cls.meaning, cls.reserved)
    return [(code, meaning, reserved) for code, (meaning, reserved) in sorted(rows.items())]
