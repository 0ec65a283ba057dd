"""Every patched process on this host, read without attaching (`nsb list` without -p).

A process that carries live patches maps the registry memfd, so its
``/proc/PID/maps`` names ``/memfd:nsb-registry``.  The registry's bytes, and
the bytes at each redirected entry, are read from ``/proc/PID/mem``: that
needs the permission ptrace needs, but it never stops the process, so the
listing pauses nothing.  The registry is decoded by ``Registry.decode`` and
judged by the same lifecycle code as nsb-list inside GDB (consistency,
listing); only the reader differs.

A read races with an nsb-* command writing the registry at that moment (the
CRC then fails): such a registry is read once more before it counts as corrupt.
"""

import errno
import os
import time

from gdb_nsb import errors, patchfiles, procstate
from gdb_nsb.binder.process_view import MappedObject, ProcessView, compute_load_bias
from gdb_nsb.elf.image import ElfImage
from gdb_nsb.lifecycle.consistency import consistency
from gdb_nsb.lifecycle.outcome import Outcome
from gdb_nsb.lifecycle.verdicts import listing, no_patches
from gdb_nsb.mappings import parse_proc_maps
from gdb_nsb.registry import STATE_ACTIVE
from gdb_nsb.registry_scan import REGISTRY_NAME, read_registry, registry_ranges
from gdb_nsb.standalone import progress


class ProcMemory:
    """A MemoryReader over /proc/PID/mem (no ptrace attach: the process keeps running)."""

    def __init__(self, pid):
        self.pid = pid
        self._fd = None

    def read(self, addr, size):
        if self._fd is None:
            self._fd = os.open("/proc/%d/mem" % self.pid, os.O_RDONLY)
        data = os.pread(self._fd, size, addr)
        if len(data) != size:
            raise OSError(errno.EIO, "short read of %d bytes at 0x%x in process %d" % (size, addr, self.pid))
        return data

    def close(self):
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _maps_text(pid):
    with open("/proc/%d/maps" % pid) as f:
        return f.read()


def registry_processes():
    """(pids carrying a registry, ascending; pids whose map this user may not read)."""
    found, unreadable = [], []
    me = os.getpid()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        pid = int(name)
        try:
            text = _maps_text(pid)
        except PermissionError:
            unreadable.append(pid)
            continue
        except OSError:
            continue  # exited meanwhile, or a kernel thread
        if REGISTRY_NAME in text:
            found.append(pid)
    return sorted(found), sorted(unreadable)


class _Images:
    """ElfImages of mapped files, shared by every process that maps the same file."""

    def __init__(self):
        self._by_identity = {}

    def open(self, pid, name, first):
        mapfile = "/proc/%d/map_files/%x-%x" % (pid, first.start, first.end)
        for path in (mapfile, name):  # map_files reaches a replaced or deleted file; it may be closed to us
            try:
                st = os.stat(path)
            except OSError:
                continue
            key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
            if key not in self._by_identity:
                try:
                    self._by_identity[key] = ElfImage(path)
                except (errors.NsbError, OSError):
                    self._by_identity[key] = None
            return self._by_identity[key]
        return None


def process_view(pid, maps, images, memory=None):
    """A ProcessView of the mapped ELF objects of ``pid`` (build-id and load bias each), from its map."""
    by_name = {}
    for m in maps:
        if m.name.startswith("/") and not m.name.startswith("/memfd:") and not m.name.startswith("/dev/"):
            by_name.setdefault(m.name, []).append(m)
    objects = []
    for name, own in by_name.items():
        image = images.open(pid, name, own[0])
        if image is None or not image.build_id:
            continue
        try:
            bias = compute_load_bias(image, own)
        except errors.NsbError:
            continue
        objects.append(MappedObject(path=name, build_id=image.build_id, load_bias=bias, ranges=own))
    return ProcessView(objects=objects, mappings=maps, memory=memory)


def _access_error(pid, e):
    if isinstance(e, (FileNotFoundError, ProcessLookupError)) or e.errno == errno.ESRCH:
        return errors.ProcessNotFoundError("process %d not found (it exited)" % pid)
    if isinstance(e, PermissionError):
        return errors.NotAttachableError("process %d: not permitted to read its memory" % pid)
    return errors.NsbError("process %d: cannot read its memory: %s" % (pid, e))


def describe(pid, images, patch_dirs=(), maps=None):
    """The `nsb list` result of ``pid`` (the runner's per-process document), read passively."""
    t0 = time.monotonic()
    out = Outcome()
    memory = ProcMemory(pid)
    try:
        maps = parse_proc_maps(_maps_text(pid)) if maps is None else maps
        ranges = registry_ranges(maps)
        try:
            registry = read_registry(ranges, memory.read)
        except errors.RegistryCorrupt:
            registry = read_registry(ranges, memory.read)  # a write under way: one more read
        if registry is None or not registry.patches:
            no_patches(out, pid)
        else:
            view = process_view(pid, maps, images, memory)
            missing = [rec.patch_build_id for rec in registry.patches
                       if patchfiles.find(rec.patch_build_id, rec.patch_path, (), patch_dirs) is None]
            listing(out, registry, view, consistency(registry, memory, view), missing, pid, memory)
    except errors.NsbError as e:
        out.fail(e)
    except OSError as e:
        out.fail(_access_error(pid, e))
    finally:
        memory.close()
    doc = {"pid": pid, "command": "list", "comm": procstate.comm(pid), "passive": True}
    doc.update(out.as_dict())
    doc["timings"] = {"total_s": round(time.monotonic() - t0, 4)}
    return doc


def _is(p, build_id, target_build_id):
    # A patch .so bound to two targets keeps its build-id: the target tells the two apart.
    return p["build_id"].startswith(build_id) and target_build_id in (None, p["target_build_id"])


def patch_state(doc, build_id, target_build_id=None):
    """State of the patch ``build_id`` (for ``target_build_id``) in a listed process: applied, partial,
    target unloaded, inactive or not applied."""
    for p in doc.get("patches") or []:
        if _is(p, build_id, target_build_id):
            return "applied" if p["state"] == STATE_ACTIVE else p["state"]
    return "not applied"


def list_all(pids=None, patch_dirs=(), show_progress=False):
    """(per-process documents, pids this user may not read) for every process carrying a registry,
    or for ``pids`` when given."""
    unreadable = []
    if pids is None:
        pids, unreadable = registry_processes()
    images = _Images()
    shown = progress.Progress(len(pids), show=show_progress)
    docs = [progress.timed(shown, pid, lambda pid=pid: describe(pid, images, patch_dirs), ok=lambda d: d["code"] == 0)
            for pid in pids]
    shown.close()
    # A process that exited since the scan is no longer on the host: not a failure to report.
    gone = errors.ProcessNotFoundError.exit_code
    return [d for d in docs if d["code"] != gone], unreadable


def processes_carrying(build_id, target_build_id=None, include_inactive=False):
    """Pids whose registry holds the patch ``build_id`` (a prefix is enough; for ``target_build_id``
    when given): active records only, any record with ``include_inactive``.  Unreadable processes
    are left out."""
    out = []
    for doc in list_all()[0]:
        state = patch_state(doc, build_id, target_build_id)
        if state != "not applied" and (include_inactive or state != "inactive"):
            out.append(doc["pid"])
    return out
