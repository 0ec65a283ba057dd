"""Undo log and deadline for changes made inside one stop (REFERENCE.md 2.5).

Every change is recorded BEFORE it is made, so a failure at any point (an
error, an expired deadline, GDB's own exception) can be rolled back:
memory writes get their old bytes back (verified), mappings we created are
unmapped, file descriptors we opened are closed, all in reverse order.
Destructive steps that cannot be undone (unmapping an old registry) are
deferred to ``commit``.
"""

import time

from gdb_nsb.errors import MismatchError, NsbError, PartialStateError, TimeoutExpired
from gdb_nsb.process import faults


class Deadline:
    """A monotonic deadline; ``check(step)`` raises TimeoutExpired once it has passed."""

    def __init__(self, seconds=None):
        self.seconds = seconds
        self.expires = None if seconds is None else time.monotonic() + seconds

    def remaining(self):
        """Seconds left (None = unbounded, never below 0)."""
        if self.expires is None:
            return None
        return max(0.0, self.expires - time.monotonic())

    def expired(self) -> bool:
        return self.expires is not None and time.monotonic() >= self.expires

    def check(self, step: str = "the operation"):
        if self.expired():
            raise TimeoutExpired("deadline of %gs passed during %s" % (self.seconds, step))


class _Write:
    def __init__(self, addr, old, new):
        self.addr, self.old, self.new = addr, bytes(old), bytes(new)

    def __repr__(self):
        return "write(0x%x, %d bytes)" % (self.addr, len(self.new))


class _Mapping:
    def __init__(self, addr, length):
        self.addr, self.length = addr, length
        self.created = False  # set once the mmap returned this address

    def __repr__(self):
        return "mapping(0x%x, 0x%x)" % (self.addr or 0, self.length)


class _Fd:
    def __init__(self, fd):
        self.fd = fd

    def __repr__(self):
        return "fd(%d)" % self.fd


class UndoLog:
    """Records changes to one inferior and can take them all back.

    ``inferior`` is a gdb_nsb.process.inferior.Inferior (or anything with
    read/write); ``injector`` a SyscallInjector, needed for mappings and fds.
    """

    def __init__(self, inferior, injector=None, deadline: Deadline = None):
        self.inferior = inferior
        self.injector = injector
        self.deadline = deadline or Deadline(None)
        self.entries = []
        self._deferred = []
        self.closed = False

    def _step(self, what):
        if self.closed:
            raise NsbError("undo log already committed or rolled back (%s)" % what)
        self.deadline.check(what)

    # --- recorded changes --------------------------------------------------

    def write(self, addr: int, data: bytes, expected: bytes = None, what: str = None):
        """Write ``data`` at ``addr``; with ``expected``, refuse unless memory holds exactly that now.

        ``what`` names the write in the error (e.g. "jump over compute")."""
        self._step("write at 0x%x" % addr)
        old = self.inferior.read(addr, len(data))
        if expected is not None and old != bytes(expected):
            raise MismatchError("bytes at 0x%x%s are %s, expected %s" % (
                addr, " (%s)" % what if what else "", old.hex(), bytes(expected).hex()))
        self.entries.append(_Write(addr, old, data))
        self.inferior.write(addr, data)
        faults.point("after-write", what or "%d bytes at %#x" % (len(data), addr))

    def write_all(self, writes, after=None, skip_done=False):
        """Make every write of ``writes`` (objects with addr, data, expected, what), checked first.

        Memory around them is read in a few large reads (one per cluster of
        nearby writes, not one per write: 1000 function entries cost 1000 GDB
        reads inside the stop), and every ``expected`` is verified before the
        first byte is written.  ``skip_done`` leaves out writes whose bytes are
        there already (a repair finishing a cut-short job).  ``after(w)`` runs
        after each write.  Returns the writes made.
        """
        writes = sorted(writes, key=lambda w: w.addr)
        if any(b.addr < a.addr + len(a.data) for a, b in zip(writes, writes[1:])):
            # Overlapping writes see each other's bytes: one after the other.
            done = []
            for w in writes:
                if skip_done and self.inferior.read(w.addr, len(w.data)) == bytes(w.data):
                    continue
                self.write(w.addr, w.data, w.expected, w.what)
                done.append(w)
                if after is not None:
                    after(w)
            return done
        current = self._read_clusters(writes)
        todo = []
        for w, old in zip(writes, current):
            if skip_done and old == bytes(w.data):
                continue
            if w.expected is not None and old != bytes(w.expected):
                raise MismatchError("bytes at 0x%x%s are %s, expected %s" % (
                    w.addr, " (%s)" % w.what if w.what else "", old.hex(), bytes(w.expected).hex()))
            todo.append((w, old))
        for w, old in todo:
            self._step("write at 0x%x" % w.addr)
            self.entries.append(_Write(w.addr, old, w.data))
            self.inferior.write(w.addr, w.data)
            faults.point("after-write", w.what or "%d bytes at %#x" % (len(w.data), w.addr))
            if after is not None:
                after(w)
        return [w for w, _ in todo]

    _CLUSTER_GAP = 4096
    _CLUSTER_MAX = 1 << 20

    def _read_clusters(self, writes):
        """The current bytes under each of ``writes`` (sorted, not overlapping), in few reads."""
        out = []
        i = 0
        while i < len(writes):
            j, start, end = i + 1, writes[i].addr, writes[i].addr + len(writes[i].data)
            while j < len(writes) and writes[j].addr - end <= self._CLUSTER_GAP \
                    and writes[j].addr + len(writes[j].data) - start <= self._CLUSTER_MAX:
                end = max(end, writes[j].addr + len(writes[j].data))
                j += 1
            try:
                block = self.inferior.read(start, end - start)
                out += [block[w.addr - start:w.addr - start + len(w.data)] for w in writes[i:j]]
            except NsbError:
                # A hole between the writes (another mapping's edge): each on its own.
                out += [self.inferior.read(w.addr, len(w.data)) for w in writes[i:j]]
            i = j
        return out

    def mmap(self, addr, length, prot, flags, fd=-1, offset=0) -> int:
        """Map through the injector; the mapping is unmapped on rollback."""
        self._step("mmap of 0x%x bytes" % length)
        entry = _Mapping(addr, length)
        self.entries.append(entry)
        got = self.injector.mmap(addr, length, prot, flags, fd, offset)
        entry.addr, entry.created = got, True
        return got

    def record_mapping(self, addr, length):
        """A mapping made by other means that rollback must unmap."""
        entry = _Mapping(addr, length)
        entry.created = True
        self.entries.append(entry)

    def record_fd(self, fd):
        """A file descriptor opened in the target that rollback must close."""
        self.entries.append(_Fd(fd))

    def close_fd(self, fd):
        """Close a recorded fd now; it is then no longer closed on rollback."""
        self._step("close(%d)" % fd)
        self.injector.close(fd)
        self.entries = [e for e in self.entries if not (isinstance(e, _Fd) and e.fd == fd)]

    def release_mapping(self, addr):
        """Unmap now a mapping this log created (a scratch page) and forget it and the writes into it."""
        self._step("munmap at 0x%x" % addr)
        entry = next((e for e in self.entries if isinstance(e, _Mapping) and e.created and e.addr == addr), None)
        if entry is None:
            raise NsbError("0x%x is not a mapping created in this operation" % addr)
        self.injector.munmap(entry.addr, entry.length)
        end = entry.addr + entry.length
        self.entries = [e for e in self.entries if e is not entry
                        and not (isinstance(e, _Write) and entry.addr <= e.addr < end)]

    def defer(self, action, description):
        """Run ``action()`` at commit only (steps that cannot be undone)."""
        self._deferred.append((action, description))

    # --- outcome ------------------------------------------------------------

    def commit(self):
        """Keep every change; run deferred steps.  Returns their failures (descriptions)."""
        self._step("commit")
        self.closed = True
        failed = []
        for action, description in self._deferred:
            try:
                action()
            except NsbError as e:
                failed.append("%s: %s" % (description, e))
        self.entries = []
        self._deferred = []
        return failed

    def rollback(self):
        """Undo everything in reverse order and verify the old bytes are back.

        Tries every entry even after a failure; raises PartialStateError
        naming what could not be undone.
        """
        if self.closed:
            return
        self.closed = True
        problems = []
        for e in reversed(self.entries):
            try:
                if isinstance(e, _Write):
                    self.inferior.write(e.addr, e.old)
                    now = self.inferior.read(e.addr, len(e.old))
                    if now != e.old:
                        problems.append("bytes at 0x%x did not return to their original value" % e.addr)
                elif isinstance(e, _Mapping):
                    if e.created:
                        self.injector.munmap(e.addr, e.length)
                elif isinstance(e, _Fd):
                    self.injector.close(e.fd)
            except NsbError as err:
                problems.append("%r: %s" % (e, err))
        self.entries = []
        self._deferred = []
        if problems:
            raise PartialStateError("rollback incomplete: " + "; ".join(problems))

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        """Roll back on any exception leaving the block; commit is explicit."""
        if exc_type is not None and not self.closed:
            self.rollback()
        return False
