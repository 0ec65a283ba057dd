"""The decisions around a patch's callbacks (docs/CALLBACKS.md), pure.

When each runs (the kernel's order, Documentation/livepatch/callbacks.rst):

* apply: pre-patch once the patch's code is loaded and bound but before any
  function is redirected; post-patch once the redirection is committed and
  the process runs.  An apply that fails after its pre-patch callback
  succeeded runs post-unpatch (the callback's counterpart), then rolls back.
* revert: pre-unpatch before anything is restored, post-unpatch once the
  functions are restored (before the patch's memory is unmapped, with
  ``--unmap``: the callback is code in that memory).

A non-zero pre-patch or pre-unpatch return refuses the operation before
anything is written (``CallbackRefused``, exit 19, naming callback and value).
A callback that times out or crashes ends the operation with
``CallbackFailed`` (exit 19) naming the callback and the state it leaves: the
patch's record says "failed: ..." (``list``: "callback failed") and nothing is
rolled back silently.
"""

from dataclasses import dataclass
from typing import Optional

from gdb_nsb.errors import CallbackFailed, CallbackRefused

LABELS = {"pre_patch": "pre-patch", "post_patch": "post-patch", "pre_unpatch": "pre-unpatch",
          "post_unpatch": "post-unpatch"}
#: The state a failed (timed out, crashed) callback leaves, by kind.
LEAVES = {
    "pre_patch": "the patch is loaded but not applied (inactive): apply it again, or take it out with "
                 "revert --unmap",
    "post_patch": "the patch stays applied: revert it if the callback's work is needed",
    "pre_unpatch": "the patch stays applied",
    "post_unpatch": "the patch is reverted",
}
FAILED_PREFIX = "failed: "

# Functions that hold a lock while they run, by base name (``base_name``): libc's allocator (an arena, or
# all of them around fork) and dynamic loader, and the shadow variables' calls (vzp_shadow.h: the region's
# one lock; -O0 patch code, so never inlined).  A callback borrowing a thread stopped inside one would wait,
# on that very thread, for the lock the thread holds: such a thread is not borrowed.
LOCK_HOLDERS = frozenset((
    "vzp_shadow_get", "vzp_shadow_alloc", "vzp_shadow_get_or_alloc", "vzp_shadow_free", "vzp_shadow_free_all",
    "malloc", "calloc", "realloc", "reallocarray", "free", "cfree", "memalign", "aligned_alloc",
    "posix_memalign", "valloc", "pvalloc", "int_malloc", "int_free", "int_realloc", "int_memalign",
    "sysmalloc", "systrim", "malloc_consolidate", "malloc_trim", "mtrim", "malloc_info", "malloc_stats",
    "mallinfo", "mallinfo2", "tcache_init", "arena_get2", "reused_arena", "get_free_list",
    "fork", "Fork", "dlopen", "dlmopen", "dlclose", "dl_open", "dl_close", "dl_iterate_phdr"))


def base_name(name: str) -> str:
    """A libc function's name without its internal prefixes: ``__GI___libc_malloc`` -> ``malloc``,
    ``_int_malloc`` -> ``int_malloc``, ``___dlopen`` -> ``dlopen``."""
    if name.startswith("__GI_"):
        name = name[len("__GI_"):]
    name = name.lstrip("_")
    return name[len("libc_"):] if name.startswith("libc_") else name


def lock_holder(frame_names) -> Optional[str]:
    """The first of a thread's frames (innermost first) that holds a lock a callback may need, or None."""
    for name in frame_names:
        if name and base_name(name) in LOCK_HOLDERS:
            return name
    return None


@dataclass(frozen=True)
class Call:
    """One callback at its run-time address."""

    kind: str
    address: int
    name: str

    @property
    def label(self) -> str:
        return "%s callback %s" % (LABELS[self.kind], self.name)

    @property
    def returns_value(self) -> bool:
        """pre-* callbacks return int (non-zero refuses); post-* return nothing."""
        return self.kind.startswith("pre_")


@dataclass(frozen=True)
class Result:
    """How one call ended: ``returned`` (pre-*: the int; post-*: None), or timed out, or a signal."""

    returned: Optional[int] = None
    timed_out: bool = False
    signal: Optional[str] = None
    seconds: float = 0.0

    @property
    def completed(self) -> bool:
        return not self.timed_out and self.signal is None


def recorded(record, kind) -> Optional[Call]:
    """The callback of ``kind`` a registry PatchRecord holds, or None."""
    for k, address, name in record.callbacks:
        if k == kind:
            return Call(k, address, name)
    return None


def failure(call: Call, result: Result, limit: float) -> str:
    """What went wrong, in words (one line)."""
    if result.timed_out:
        return "%s timed out after %g s (stopped on its thread, which went back to where it was)" % (call.label, limit)
    return "%s crashed (%s; the signal was not delivered, its thread went back to where it was)" % (
        call.label, result.signal)


def judge(call: Call, result: Result, limit: float, operation: str) -> None:
    """Raise the verdict on a finished call, or return when it succeeded.

    ``operation`` names what the callback belongs to ("apply of patch X")."""
    if not result.completed:
        raise CallbackFailed("%s: %s; %s" % (operation, failure(call, result, limit), LEAVES[call.kind]))
    if call.returns_value and result.returned:
        raise CallbackRefused("%s returned %d: %s refused, nothing written" % (call.label, result.returned,
                                                                              operation))


def failed_state(call: Call, result: Result, limit: float) -> str:
    """The record's ``callback_state`` after a failed call."""
    return FAILED_PREFIX + failure(call, result, limit)


def has_failed(record) -> bool:
    return record.callback_state.startswith(FAILED_PREFIX)
