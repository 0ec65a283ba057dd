"""Typed errors of the core.

Every error is one line for the user.  ``exit_code`` is the runner's stable
exit status for that class of failure (documented in the README and in
``nsb --help``); commands turn these into ``gdb.GdbError``.
"""


class NsbError(Exception):
    """Base of every error gdb-nsb reports to a user."""

    exit_code = 10  # internal / unclassified failure

    def __str__(self):
        # Exactly one line, whatever the message was built from.
        return " ".join(super().__str__().split())


class UsageError(NsbError):
    """Wrong command-line or command arguments."""

    exit_code = 1


class NotAppliedError(NsbError):
    """The patch is not applied (check, revert)."""

    exit_code = 2


class BusyError(NsbError):
    """No safe point was reached: a thread stays inside a replaced function."""

    exit_code = 3


class MismatchError(NsbError):
    """Patch and target do not belong together (build-id, entry bytes ...)."""

    exit_code = 4


class AlreadyAppliedError(NsbError):
    """The patch is already applied."""

    exit_code = 5


class ProcessNotFoundError(NsbError):
    """No such process."""

    exit_code = 6


class NotAttachableError(NsbError):
    """The process exists but cannot be traced (permissions, other tracer)."""

    exit_code = 7


class PartialStateError(NsbError):
    """The process holds a half-applied patch."""

    exit_code = 8


class PatchFileError(NsbError):
    """The patch file is missing, not ELF, corrupt, or has no/bad vzpatch section."""

    exit_code = 9


class ElfError(PatchFileError):
    """An ELF file cannot be read or is not what it should be."""


class DebugInfoError(NsbError):
    """Debug information needed for generation is missing or unusable."""

    exit_code = 11


class GenerateError(NsbError):
    """The generator refuses a patch (unknown symbol, writable data ...)."""

    exit_code = 12


class UnsupportedError(NsbError):
    """A relocation type, language or construct we do not support."""

    exit_code = 13


class EnvironmentRefusal(NsbError):
    """The environment forbids the operation (seccomp filter, policy)."""

    exit_code = 14


class TimeoutExpired(NsbError):
    """The deadline passed; everything was rolled back."""

    exit_code = 15


class RegistryCorrupt(NsbError):
    """The in-process registry fails its CRC: read-only mode."""

    exit_code = 16


class TargetExitedError(NsbError):
    """The process exited while the operation let it run (between safe-point tries): nothing was written."""

    exit_code = 17


class TargetExecError(NsbError):
    """The process executed a new program while the operation let it run: aborted, nothing written."""

    exit_code = 18
