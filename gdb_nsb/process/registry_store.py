"""Where the registry lives in the target, and how it is read and written.

The registry is a memfd named ``nsb-registry`` mapped MAP_PRIVATE read-only,
its fd closed right after: ``info proc mappings`` shows it as
``/memfd:nsb-registry (deleted)``, locally and through gdbserver, and forked
children inherit it.  We write into it through GDB (which writes into
read-only pages); the private mapping keeps those pages to this process.

Growing: a new, larger memfd mapping with the next generation number is
created and written, and the old one is unmapped only when the operation
commits, so a reader always finds one valid registry; should it find two,
the higher generation wins.
"""

from gdb_nsb import mappings as _mappings
from gdb_nsb.errors import RegistryCorrupt
from gdb_nsb.process import syscalls as _sys
from gdb_nsb.registry import HEADER_SIZE, Registry

REGISTRY_NAME = "nsb-registry"
REGISTRY_OBJFILE = "/memfd:" + REGISTRY_NAME
PAGE = 4096


def _round_up(n, to=PAGE):
    return (n + to - 1) // to * to


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

    def registry_mappings(self):
        """Mappings that are registry memfds, merged per contiguous range."""
        out = []
        for m in _mappings.named(self.inferior.mappings(), REGISTRY_OBJFILE):
            if out and out[-1][0] + out[-1][1] == m.start and m.offset == out[-1][2] + out[-1][1]:
                out[-1] = (out[-1][0], out[-1][1] + m.size, out[-1][2])
            else:
                out.append((m.start, m.size, m.offset))
        return [(start, size) for start, size, offset in out if offset == 0]

    def _read_one(self, addr, size):
        head = self.inferior.read(addr, min(size, HEADER_SIZE))
        peek = Registry.peek_header(head)
        where = "registry at 0x%x" % addr
        if peek is None:
            return Registry.decode(head, where)  # raises with the precise defect
        _, length, _ = peek
        data = self.inferior.read(addr, min(size, HEADER_SIZE + length))
        return Registry.decode(data, where)

    def load(self):
        """The process's Registry, or None if it has none.

        Raises RegistryCorrupt (and sets read_only) when registries exist but
        none is valid.
        """
        self.location, self.read_only, self.problem, self.stale = None, False, None, []
        found, errors = [], []
        for addr, size in self.registry_mappings():
            try:
                found.append((self._read_one(addr, size), addr, size))
            except RegistryCorrupt as e:
                errors.append(str(e))
        if not found:
            if errors:
                self.read_only = True
                self.problem = "%s; gdb-nsb is in read-only mode for process %d" % (errors[0], self.inferior.pid)
                raise RegistryCorrupt(self.problem)
            return None
        found.sort(key=lambda f: f[0].generation)
        registry, addr, size = found[-1]
        self.location = (addr, size)
        self.stale = [(a, s) for _, a, s in found[:-1]]
        return registry

    def save(self, registry: Registry, undo):
        """Store ``registry`` in the target, every change through ``undo``.

        Writes in place when it fits; otherwise creates a larger registry
        (next generation) and defers unmapping the old one to commit.
        """
        if self.read_only:
            raise RegistryCorrupt("registry is corrupt, refusing to write it: %s" % self.problem)
        data = registry.encode()
        if self.location is not None and len(data) <= self.location[1]:
            addr = self.location[0]
            # Payload first, header (with the CRC) last: an interrupted write fails the CRC.
            undo.write(addr + HEADER_SIZE, data[HEADER_SIZE:])
            undo.write(addr, data[:HEADER_SIZE])
            return addr
        old = self.location
        if old is not None:
            registry.generation += 1
            data = registry.encode()
        size = _round_up(max(2 * len(data), PAGE))
        addr = self._create(size, undo)
        undo.write(addr + HEADER_SIZE, data[HEADER_SIZE:])
        undo.write(addr, data[:HEADER_SIZE])
        self.location = (addr, size)
        if old is not None:
            undo.defer(lambda: self.injector.munmap(old[0], old[1]),
                       "unmap the previous registry at 0x%x" % old[0])
        return addr

    def _create(self, size, undo):
        """A fresh, zeroed, read-only private memfd mapping named nsb-registry."""
        # memfd_create needs its name in target memory: a scratch page, gone afterwards.
        scratch = undo.mmap(0, PAGE, _sys.PROT_READ, _sys.MAP_PRIVATE | _sys.MAP_ANONYMOUS)
        undo.write(scratch, REGISTRY_NAME.encode() + b"\0")
        fd = self.injector.memfd_create(scratch, _sys.MFD_CLOEXEC)
        undo.record_fd(fd)
        self.injector.ftruncate(fd, size)
        addr = undo.mmap(0, size, _sys.PROT_READ, _sys.MAP_PRIVATE, fd, 0)
        undo.close_fd(fd)
        undo.release_mapping(scratch)
        return addr
