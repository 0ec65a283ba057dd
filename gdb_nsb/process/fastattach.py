"""What the runner does inside GDB before it attaches, so the target is stopped for less time.

GDB stops every thread when it attaches and keeps them stopped while it
reads the symbols of every mapped object; measured here that is most of the
pause any GDB-based tool imposes (bench/README.md).  Before ``attach`` we:

* parse the patch and every mapped ELF file (:mod:`filecache`), so that the
  engine finds them ready in the stop;
* load the main executable's symbols (``file``) while the process still
  runs, when the file on disk is the one mapped: GDB then keeps them at
  attach instead of reading them in the stop;
* skip separate debug files (``set debug-file-directory``, empty) when no
  separate debug file of a mapped object holds unwind tables
  (``.debug_frame``) and every mapped object has its own ``.eh_frame``:
  reading the DWARF of such files (libc6-dbg's, for one) was the largest
  part of the pause, and they add nothing the safe-point check needs.  If
  any debug file carries ``.debug_frame``, or an object has no
  ``.eh_frame``, nothing is skipped: the safe-point check relies on the
  unwind tables of every mapped object.

Native targets only; nothing here may fail the operation (errors are ignored:
the plain attach path is then taken).
"""

import os
import pickle

import gdb

from gdb_nsb import errors, timeline
from gdb_nsb.elf.headers import is_elf_file
from gdb_nsb.elf.image import ElfImage
from gdb_nsb.process import filecache, session_state

UNWIND_SECTIONS = (".eh_frame",)


def section_names(path):
    """Section names of an ELF file, reading only its headers and name table; None when unreadable."""
    try:
        img = ElfImage(path, allow_relocatable=True)
        if not 0 < img.shstrndx < len(img.sections):
            return None  # sections without names: what they hold is unknown
        return [sec.name for sec in img.sections[1:]]
    except errors.ElfError:
        return None


def debug_file_candidates(img, debug_dir="/usr/lib/debug"):
    """Where GDB would look for ``img``'s separate debug file (by build-id, then .gnu_debuglink)."""
    out = []
    bid = img.build_id
    if bid and len(bid) > 2:
        out.append(os.path.join(debug_dir, ".build-id", bid[:2], bid[2:] + ".debug"))
    link = img.debuglink
    if link:
        d = os.path.dirname(os.path.realpath(img.path))
        out += [os.path.join(d, link[0]), os.path.join(d, ".debug", link[0]),
                os.path.join(debug_dir, d.lstrip("/"), link[0])]
    return out


def _separate_unwind_tables(img):
    """True when an existing separate debug file of ``img`` holds .debug_frame (or cannot be read)."""
    for cand in debug_file_candidates(img):
        if os.path.exists(cand):
            names = section_names(cand)
            if names is None or ".debug_frame" in names:
                return True
    return False


def _has_own_unwind_tables(img):
    try:
        return any(img.section_by_name(name) is not None for name in UNWIND_SECTIONS)
    except errors.NsbError:
        return False


def _quote(path):
    return '"%s"' % path.replace("\\", "\\\\").replace('"', '\\"')


def plan(pid, patches=(), decode_patches=True):
    """What prepare would do, as data: {"images": n, "skip_debug_files": bool, "exe": path|None}."""
    filecache.prefetch(pid, patches, decode_patches=decode_patches)
    files = filecache.mapped_files(pid)
    skip = bool(files)
    for path in files:
        magic = is_elf_file(path)
        if magic is False:
            continue  # a data file (locale archive, shared memory): GDB reads no symbols from it
        try:
            if magic is None:
                raise OSError(path)
            img = filecache.image(path)
        except (errors.NsbError, OSError):
            skip = False  # unreadable object: let GDB do what it always does
            break
        if not _has_own_unwind_tables(img) or _separate_unwind_tables(img):
            skip = False
            break
    exe = None
    try:
        real = os.readlink("/proc/%d/exe" % pid)
        if os.path.samestat(os.stat(real), os.stat("/proc/%d/exe" % pid)):
            exe = real
    except OSError:
        exe = None
    return {"images": len(files), "skip_debug_files": skip, "exe": exe}


def prepare(pid, patches=(), gate=None):
    """Run in GDB before ``attach PID``: warm caches and settings; returns plan()'s dict.

    With ``gate`` (a pipe the runner holds), wait on it afterwards: "go" lets
    the session attach; anything else (the runner found the patch file bad,
    or died) ends GDB here, before the process was ever touched.  After "go"
    come the patches the runner decoded (see :func:`_wait_at_gate`), so this
    session does not import protobuf nor decode them again.  Never raises: a
    failed speed-up must not fail the operation.
    """
    try:
        decided = plan(pid, [p for p in patches if p and os.path.isfile(p)], decode_patches=gate is None)
    except Exception as e:  # noqa: BLE001 - a failed speed-up must never fail the operation
        decided = {"error": str(e)}
    else:
        try:
            if decided["skip_debug_files"]:
                for name, value in session_state.NO_DEBUG_FILES:
                    session_state.write(name, value)
            if decided["exe"]:
                gdb.execute("file %s" % _quote(decided["exe"]), to_string=True)
        except gdb.error as e:
            decided["error"] = str(e)
    timeline.mark("prefetch_done")
    if gate is not None:
        _wait_at_gate(gate)
    timeline.mark("gate_open")
    return decided


def _wait_at_gate(fd):
    """Wait for the runner's word: "go", then until the runner closes the pipe, its decoded patches
    (a pickle of {path: (file identity, LivePatch, identity checked)}; from the runner, this session's parent, over a
    pipe only the two hold).  A patch file that changed since keeps its own decode (filecache.seed)."""
    chunks = []
    try:
        while True:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
        os.close(fd)
    except OSError:
        chunks = []
    data = b"".join(chunks)
    if data[:2] != b"go":
        os._exit(0)  # nothing attached: leave without GDB's exit path
    if len(data) > 2:
        try:
            decoded = pickle.loads(data[2:])
        except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, ValueError, TypeError):
            return  # this session decodes the patch itself, as without a handoff
        for path, (identity, patch, checked) in decoded.items():
            filecache.seed(path, identity, patch, checked)


def exit_if_detached():
    """Run last in the runner's batch session: end GDB at once when no process is attached any more.

    GDB's own exit finalizes Python (every parsed ELF file, the extension's
    modules): tens of milliseconds of latency for nothing once the result file
    is written and the process detached.  With a process still attached the
    normal exit path runs (it detaches).
    """
    import sys
    if any(inf.pid for inf in gdb.inferiors()):
        return
    timeline.mark("detached")
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(0)
