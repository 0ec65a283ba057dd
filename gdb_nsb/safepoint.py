"""The safe-point rule, as plain data (no ``gdb`` import).

A process is at a safe point for a patch when no thread's stack holds a frame
inside a *busy range* (every fragment of a function the patch replaces, plus
its copy in every applied layer), and every stack was unwound reliably.

Rules (REFERENCE 2.1):

* the innermost frame, and a frame interrupted by a signal (the frame just
  older than a signal-trampoline frame) or by a GDB inferior call (older than
  a dummy frame), are tested at their pc: a pc exactly at a function's entry
  is safe, since nothing of the function has run yet;
* every other frame is tested at pc-1, its call instruction (the return
  address may already lie past the end of the function);
* an inline frame shares its physical frame with the frame just older than it,
  which is therefore tested at the same address;
* a stack is reliable only if every pc lies in code of an object whose unwind
  tables GDB has loaded (or the vDSO) and the walk ends at the thread's
  outermost frame with a normal stop reason; pc 0, unreadable memory and
  unknown code make it unsafe.

``gdb_nsb.process.stacks`` turns GDB's frames into :class:`ThreadStack`;
``gdb_nsb.process.safepoint_wait`` loops until :meth:`SafePointCheck.check` says safe.
"""

import bisect
import re
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, cast

NORMAL = "normal"
SIGTRAMP = "sigtramp"
INLINE = "inline"
DUMMY = "dummy"
FRAME_KINDS = (NORMAL, SIGTRAMP, INLINE, DUMMY)

# How a stack walk ended.  Only OUTERMOST (the unwinder reached the frame
# whose caller is undefined: _start, clone) is a reliable end.
OUTERMOST = "outermost"


@dataclass(frozen=True)
class Frame:
    """One frame of a thread's stack as the unwinder saw it.

    ``pc`` is None when it could not be read; ``known`` says whether the pc
    lies in code of an object whose unwind tables GDB has loaded (or the
    vDSO); ``name`` is the debugger's function name, only for messages;
    ``sp`` is the frame's stack pointer (the caller's sp after a return from
    the next-inner frame), used to recognise a return in run-out.
    """

    pc: Optional[int]
    kind: str = NORMAL
    known: bool = True
    name: Optional[str] = None
    sp: Optional[int] = None


@dataclass
class ThreadStack:
    """A thread's whole stack, innermost frame first."""

    num: int                      # GDB's thread number
    lwp: int                      # kernel thread id
    name: Optional[str]
    frames: List[Frame]
    stop_reason: str = OUTERMOST  # OUTERMOST, or the unwinder's words for why it stopped


@dataclass(frozen=True)
class Offender:
    """A frame that makes the process unsafe."""

    thread: int
    lwp: int
    thread_name: Optional[str]
    level: int
    pc: Optional[int]
    function: Optional[str]
    reason: str
    busy: bool                    # True: inside a replaced function; False: unreliable stack

    def message(self) -> str:
        who = "thread %d (LWP %d%s)" % (self.thread, self.lwp,
                                         ", %r" % self.thread_name if self.thread_name else "")
        pc = "pc 0x%x" % self.pc if self.pc is not None else "pc unreadable"
        fn = self.function or "??"
        return "%s frame #%d in %s (%s): %s" % (who, self.level, fn, pc, self.reason)


@dataclass
class Verdict:
    """Result of a check: safe, or the offending frames (innermost first per thread)."""

    offenders: List[Offender] = field(default_factory=list)

    @property
    def safe(self) -> bool:
        return not self.offenders

    def message(self) -> str:
        """One line naming the first offender (thread, frame, function) and how many more."""
        if self.safe:
            return "safe point reached"
        first = self.offenders[0]
        more = len(self.offenders) - 1
        tail = "" if not more else " (and %d more frame%s)" % (more, "s" if more > 1 else "")
        return "not at a safe point: %s%s" % (first.message(), tail)

    def outermost_busy(self) -> Dict[int, Offender]:
        """Per thread number, its outermost frame inside a busy range (for run-out)."""
        out: Dict[int, Offender] = {}
        for o in self.offenders:
            if o.busy and (o.thread not in out or o.level > out[o.thread].level):
                out[o.thread] = o
        return out

    def unreliable_threads(self) -> List[int]:
        return sorted({o.thread for o in self.offenders if not o.busy})


class SafePointCheck:
    """Tests stacks against the busy ranges of the functions being replaced.

    ``busy`` maps a function name to its absolute address ranges ``[(lo, hi)]``
    (hi exclusive): every fragment in the target and every layer copy.
    ``entries`` maps a name to the addresses that count as its entries (a pc
    exactly there is safe); by default the start of the function's first range.
    """

    def __init__(self, busy: Dict[str, Sequence[Tuple[int, int]]],
                 entries: Optional[Dict[str, Iterable[int]]] = None):
        spans = []
        for name, ranges in busy.items():
            for lo, hi in ranges:
                if hi <= lo:
                    raise ValueError("empty busy range 0x%x-0x%x for %s" % (lo, hi, name))
                spans.append((lo, hi, name))
        spans.sort()
        self._los = [s[0] for s in spans]
        self._spans = spans
        self._reach: List[int] = []          # running maximum of hi, to bound the backward walk
        for _lo, hi, _name in spans:
            self._reach.append(max(hi, self._reach[-1] if self._reach else hi))
        self._entries: set = set()
        for name, ranges in busy.items():
            if entries is not None and name in entries:
                self._entries.update(entries[name])
            elif ranges:
                self._entries.add(ranges[0][0])

    def function_at(self, addr: int) -> Optional[str]:
        """Name of the busy function whose range holds ``addr``, or None."""
        i = bisect.bisect_right(self._los, addr)
        # Walk back while an earlier span could still reach addr (ranges may
        # overlap: a layer copy never does in practice, but be exact).
        while i > 0 and self._reach[i - 1] > addr:
            i -= 1
            lo, hi, name = self._spans[i]
            if lo <= addr < hi:
                return name
        return None

    def check(self, stacks: Iterable[ThreadStack]) -> Verdict:
        offenders = []
        for st in stacks:
            offenders.extend(self._check_thread(st))
        return Verdict(offenders)

    def _check_thread(self, st: ThreadStack) -> List[Offender]:
        out = []

        def offend(level, frame, function, reason, busy):
            out.append(Offender(st.num, st.lwp, st.name, level, frame.pc if frame else None,
                                function, reason, busy))

        at_pc = True          # the next frame is tested at its pc (innermost, or interrupted)
        prev_test = None      # test address of the next-inner frame (for inline sharing)
        prev_inline = False
        at_pc_prev = True     # whether the next-inner frame was tested at its pc (read only after an inline frame)
        for level, fr in enumerate(st.frames):
            if fr.kind not in FRAME_KINDS:
                raise ValueError("unknown frame kind %r" % fr.kind)
            if fr.pc is None:
                offend(level, fr, fr.name, "unreadable memory: pc cannot be read", False)
                return out
            if fr.pc == 0:
                offend(level, fr, fr.name, "pc 0", False)
                return out
            if fr.kind == DUMMY:
                # GDB's own inferior-call frame: the frame it interrupted runs
                # again from its pc.
                at_pc, prev_test, prev_inline = True, None, False
                continue
            if not fr.known:
                offend(level, fr, fr.name, "unknown code: no object with unwind tables holds this pc", False)
                return out
            if prev_inline:
                test = prev_test
                at_entry_ok = at_pc_prev
            else:
                test = fr.pc if at_pc else fr.pc - 1
                at_entry_ok = at_pc
            fn = self.function_at(cast(int, test))
            if fn is not None and not (at_entry_ok and test in self._entries):
                offend(level, fr, fn, "inside %s, which the patch replaces" % fn, True)
            at_pc_prev = at_entry_ok
            prev_test, prev_inline = test, fr.kind == INLINE
            # The frame just older than a signal trampoline was interrupted,
            # not calling: its pc is the next instruction to run.
            at_pc = fr.kind == SIGTRAMP
        if st.stop_reason != OUTERMOST:
            last = st.frames[-1] if st.frames else None
            offend(len(st.frames) - 1, last, last.name if last else None,
                   "stack not unwound to its outermost frame: %s" % st.stop_reason, False)
        return out


_SECTION_RE = re.compile(r"^\s*\[\s*\d+\]\s+0x([0-9a-fA-F]+)->0x([0-9a-fA-F]+)\s+at\s+0x[0-9a-fA-F]+:\s+(\S+)\s*(.*)$")
_OBJECT_RE = re.compile(r"^(?:Object|Exec) file: `(.*)', file type")


class KnownCode:
    """Address ranges of code in objects whose unwind tables the debugger has.

    Built from the text of GDB's ``maint info sections -all-objects``: one
    block per object file (``Exec file:`` / ``Object file:``, the vDSO shows as
    ``system-supplied DSO at 0x...``), one line per section with its flags.
    An object counts only if it (or a block at the same addresses, its
    separate debug file) carries ``.eh_frame`` or ``.debug_frame``.
    """

    def __init__(self, ranges: Sequence[Tuple[int, int]]):
        merged: List[Tuple[int, int]] = []
        for lo, hi in sorted(r for r in ranges if r[1] > r[0]):
            if merged and lo <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
            else:
                merged.append((lo, hi))
        self.ranges = merged
        self._los = [r[0] for r in merged]

    def __contains__(self, addr: int) -> bool:
        i = bisect.bisect_right(self._los, addr) - 1
        return i >= 0 and addr < self.ranges[i][1]

    @classmethod
    def from_sections_text(cls, text: str) -> "KnownCode":
        blocks: List[Any] = []  # [object name, [code ranges], has unwind tables]
        cur: Any = None
        for line in text.splitlines():
            m = _OBJECT_RE.match(line)
            if m:
                cur = [m.group(1), [], False]
                blocks.append(cur)
                continue
            m = _SECTION_RE.match(line)
            if not m or cur is None:
                continue
            lo, hi, name, flags = int(m.group(1), 16), int(m.group(2), 16), m.group(3), m.group(4).split()
            if name in (".eh_frame", ".debug_frame"):
                cur[2] = True
            if "CODE" in flags and lo != 0:
                cur[1].append((lo, hi))
        # A stripped object whose separate debug file carries .debug_frame
        # shares its code addresses with that file's block.
        with_tables: set = set()
        for _name, code, tables in blocks:
            if tables:
                with_tables.update(code)
        ranges: List[Tuple[int, int]] = []
        for _name, code, tables in blocks:
            if tables or any(r in with_tables for r in code):
                ranges.extend(code)
        return cls(ranges)
