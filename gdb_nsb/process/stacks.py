"""Every thread's whole stack, read with GDB's unwinder, as ``safepoint`` data.

While collecting, ``backtrace past-main`` and ``past-entry`` are on and there
is no frame limit, so a walk ends only at a thread's real outermost frame
(``_start``, ``clone3``) or where the unwinder gives up; the user's settings
are restored afterwards.  Known code is read once per collection from
``maint info sections -all-objects`` (every object file GDB holds, the vDSO
and symbol files added for patch layers included), which is cheaper than
asking GDB per frame and works the same on a remote target.
"""

import gdb

from gdb_nsb.process.session_state import UNWIND_EVERYTHING, changed
from gdb_nsb.safepoint import (DUMMY, INLINE, NORMAL, OUTERMOST, SIGTRAMP, Frame, KnownCode,
                               ThreadStack)

_KINDS = {gdb.SIGTRAMP_FRAME: SIGTRAMP, gdb.INLINE_FRAME: INLINE, gdb.DUMMY_FRAME: DUMMY}


def known_code() -> KnownCode:
    """Code ranges of every object GDB has unwind tables for."""
    return KnownCode.from_sections_text(gdb.execute("maint info sections -all-objects", to_string=True))


def _walk(frame, known, want_sp):
    frames = []
    reason = OUTERMOST
    while frame is not None:
        try:
            kind = _KINDS.get(frame.type(), NORMAL)
            pc = frame.pc()
        except gdb.error:
            frames.append(Frame(None, NORMAL, False))
            return frames, "unreadable frame"
        is_known = kind == DUMMY or pc in known
        name = None
        if not is_known:
            try:
                name = frame.name()
            except gdb.error:
                name = None
        sp = None
        if want_sp:
            try:
                sp = int(frame.read_register("rsp"))
            except (gdb.error, ValueError):
                sp = None
        frames.append(Frame(pc, kind, is_known, name, sp))
        try:
            older = frame.older()
        except gdb.error as e:
            return frames, "unwinding failed: %s" % e
        if older is None:
            why = frame.unwind_stop_reason()
            if why != gdb.FRAME_UNWIND_OUTERMOST:
                reason = gdb.frame_stop_reason_string(why) if why != gdb.FRAME_UNWIND_NO_REASON \
                    else "the unwinder stopped without reaching the outermost frame"
        frame = older
    return frames, reason


def collect_stacks(inferior=None, want_sp=True):
    """Return a ThreadStack per thread of ``inferior`` (all threads must be stopped).

    The selected thread and frame are restored afterwards.
    """
    inf = inferior or gdb.selected_inferior()
    known = known_code()
    stacks = []
    try:
        old_thread = gdb.selected_thread()
    except gdb.error:
        old_thread = None
    try:
        old_frame = gdb.selected_frame() if old_thread is not None else None
    except gdb.error:
        old_frame = None
    with changed(UNWIND_EVERYTHING):
        try:
            for th in sorted(inf.threads(), key=lambda t: t.num):
                th.switch()
                try:
                    newest = gdb.newest_frame()
                except gdb.error as e:
                    stacks.append(ThreadStack(th.num, th.ptid[1], th.name, [], "no frame: %s" % e))
                    continue
                frames, reason = _walk(newest, known, want_sp)
                stacks.append(ThreadStack(th.num, th.ptid[1], th.name, frames, reason))
        finally:
            if old_thread is not None and old_thread.is_valid():
                old_thread.switch()
                if old_frame is not None:
                    try:
                        old_frame.select()
                    except gdb.error:
                        pass
    return stacks
