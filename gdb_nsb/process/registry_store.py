"""Where the registry lives in the target, and how it is read and written.

The registry is a memfd named ``nsb-registry`` mapped MAP_PRIVATE read-only,
its fd closed right after: ``info proc mappings`` shows it as
``/memfd:nsb-registry (deleted)``, locally and through gdbserver, and forked
children inherit it.  We write into it through GDB (which writes into
read-only pages); the private mapping keeps those pages to this process.

Every write commits through the mapping's two slots and its 8-byte commit
word (``gdb_nsb.registry_slots``), so a tool killed after any single write
leaves a registry the next call reads.  Growing (and migrating a format-1
registry): a new, larger memfd mapping with the next generation number is
created and committed, and the old one is unmapped only when the operation
commits, so a reader always finds one valid registry; should it find two,
the higher generation wins.
"""

from gdb_nsb.errors import RegistryCorrupt
from gdb_nsb.process import syscalls as _sys
from gdb_nsb import registry_slots as slots
from gdb_nsb.registry import Registry
from gdb_nsb.registry_scan import REGISTRY_NAME, registry_ranges

PAGE = 4096


class RegistryStore:
    """The registry of the current inferior.

    After ``load``: ``location`` is (address, size) of the registry mapping in
    use (None when the process has none), ``read_only`` is True with
    ``problem`` set when only a corrupt registry was found, ``stale`` lists
    other registry mappings (older generations left by an interrupted grow).
    """

    def __init__(self, inferior, injector=None):
        self.inferior = inferior
        self.injector = injector
        self.location = None
        self.read_only = False
        self.problem = None
        self.stale = []
        self.found = None  # registry_slots.Found of the mapping in use

    def registry_mappings(self):
        """Mappings that are registry memfds, merged per contiguous range."""
        return registry_ranges(self.inferior.mappings())

    def _read_one(self, addr, size):
        def read(offset, length):
            return self.inferior.read(addr + offset, length)
        return slots.decode(read, size, "registry at 0x%x" % addr)

    def load(self):
        """The process's Registry, or None if it has none.

        Raises RegistryCorrupt (and sets read_only) when registries exist but
        none holds a valid record.  A mapping a tool created but never
        committed holds no registry; it becomes ``location`` (to be reused)
        when there is no valid one.
        """
        self.location, self.read_only, self.problem, self.stale, self.found = None, False, None, [], None
        found, empty, errors = [], [], []
        for addr, size in self.registry_mappings():
            try:
                f = self._read_one(addr, size)
            except RegistryCorrupt as e:
                errors.append(str(e))
                continue
            (found if f.registry is not None else empty).append((f, addr, size))
        if not found:
            if errors:
                self.read_only = True
                self.problem = "%s; gdb-nsb is in read-only mode for process %d" % (errors[0], self.inferior.pid)
                raise RegistryCorrupt(self.problem)
            if empty:
                self.found, self.location = empty[-1][0], empty[-1][1:]
                self.stale = [(a, s) for _, a, s in empty[:-1]]
            return None
        found.sort(key=lambda f: f[0].generation)
        self.found, addr, size = found[-1]
        self.location = (addr, size)
        self.stale = [(a, s) for _, a, s in found[:-1] + empty]
        return self.found.registry

    @property
    def seq(self):
        """The commit sequence number of the registry in use (0: none committed)."""
        return self.found.seq if self.found is not None else 0

    def read_seq(self):
        """The commit word as the target holds it now (one 8-byte read): differs from ``seq`` once
        another call committed; None when the process had no format-2 registry at ``load``."""
        if self.location is None or self.found is None or not self.found.formatted:
            return None
        return int.from_bytes(self.inferior.read(self.location[0] + slots.SEQ_OFFSET, 8), "little")

    def save(self, registry: Registry, undo):
        """Store ``registry`` in the target, every change through ``undo``.

        Fills the slot not in use, then commits with one 8-byte write.  When it
        does not fit (or the registry is still format 1) a larger format-2
        mapping (next generation) is created and committed, and the old one is
        unmapped only when the operation commits: a reader always finds one
        valid registry, and of two the higher generation wins.
        """
        if self.read_only:
            raise RegistryCorrupt("registry is corrupt, refusing to write it: %s" % self.problem)
        if self.location is not None:
            addr, size = self.location
            writes = slots.commit_writes(self.found, registry, size)
            if writes is not None:
                self._write(addr, writes, undo)
                self.found = slots.after_commit(self.found, registry, size)
                return addr
        old = self.location
        if old is not None:
            registry.generation = max(registry.generation, self.found.generation) + 1
        size = slots.mapping_size_for(len(registry.encode_payload()))
        addr = self._create(size, undo)
        fresh = slots.Found(None, slots.FORMAT_VERSION, registry.generation)
        self._write(addr, slots.commit_writes(fresh, registry, size), undo)
        self.found = slots.after_commit(fresh, registry, size)
        self.location = (addr, size)
        if old is not None:
            undo.defer(lambda: self.injector.munmap(old[0], old[1]),
                       "unmap the previous registry at 0x%x" % old[0])
        return addr

    @staticmethod
    def _write(addr, writes, undo):
        for offset, data, what in writes:
            undo.write(addr + offset, data, what=what)

    def _create(self, size, undo):
        """A fresh, zeroed, read-only private memfd mapping named nsb-registry."""
        return create_memfd_mapping(self.injector, undo, REGISTRY_NAME, size, _sys.PROT_READ)


def create_memfd_mapping(injector, undo, name, size, prot):
    """A fresh, zeroed, private mapping of a memfd called ``name`` (its fd closed again), through ``undo``:
    every map of the process shows it as ``/memfd:NAME (deleted)``, and a forked child gets a copy."""
    # memfd_create needs its name in target memory: a scratch page, gone afterwards.
    scratch = undo.mmap(0, PAGE, _sys.PROT_READ, _sys.MAP_PRIVATE | _sys.MAP_ANONYMOUS)
    undo.write(scratch, name.encode() + b"\0", what="name of the %s memfd" % name)
    fd = injector.memfd_create(scratch, _sys.MFD_CLOEXEC)
    undo.record_fd(fd)
    injector.ftruncate(fd, size)
    addr = undo.mmap(0, size, prot, _sys.MAP_PRIVATE, fd, 0)
    undo.close_fd(fd)
    undo.release_mapping(scratch)
    return addr
