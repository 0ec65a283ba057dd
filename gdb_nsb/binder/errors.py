"""Typed errors of the binder (each one line, each a subclass of NsbError)."""

from gdb_nsb.errors import MismatchError, NsbError, PatchFileError, UnsupportedError


class UnsupportedRelocation(UnsupportedError):
    """The patch carries a relocation type the binder does not apply."""


class BadRelocation(PatchFileError):
    """A relocation or fix-up of the patch is malformed (writes outside the patch's segments, names a
    symbol the patch does not have): the patch file is corrupt, not merely beyond what we support."""


class UnresolvedSymbol(MismatchError):
    """A strong undefined symbol of the patch has no definition in scope."""

    def __init__(self, symbol, message):
        super().__init__(message)
        self.symbol = symbol


class IfuncNeedsResolver(UnsupportedError):
    """An IFUNC symbol has no resolved slot in the process: its resolver must run.

    The GDB layer may run ``resolver_addr`` inside the stop and plan again with
    the result passed as ``ifunc_results={resolver_addr: implementation}``.
    """

    def __init__(self, symbol, resolver_addr):
        super().__init__("IFUNC symbol %s has no resolved slot in the process; its resolver at %#x must run"
                         % (symbol, resolver_addr))
        self.symbol = symbol
        self.resolver_addr = resolver_addr


class FunctionTooShort(UnsupportedError):
    """A replaced function is too short to hold the jump to its new version."""


class OutOfReach(UnsupportedError):
    """A 4-byte field cannot reach its destination (no placement within +-2 GiB)."""


class NoAddressSpace(NsbError):
    """No free address range can hold the patch."""


class EntryMismatch(MismatchError):
    """The bytes at a function's entry are not the ones expected."""


class BreakpointInJump(NsbError):
    """A debugger breakpoint lies inside the bytes a jump overwrites."""


class PlanError(NsbError):
    """The requested plan contradicts the registry (not applied, applied twice ...)."""
