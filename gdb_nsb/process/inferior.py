"""A small facade over ``gdb`` for the current inferior.

Everything goes through GDB's own API (memory, registers, threads,
``info proc mappings``), so it works the same on a native process and
through ``gdbserver``.  Precondition of every method: all threads stopped.
"""

import contextlib

import gdb

from gdb_nsb import mappings as _mappings
from gdb_nsb.errors import NsbError, UnsupportedError

# Registers a thread's user context consists of, as GDB names them on
# amd64-linux.  Segment selectors are not restored: GDB writes the whole
# user_regs_struct on every register store anyway, and writing a selector can
# reset the matching base.  ``orig_rax`` is handled apart (restored last).
GENERAL_REGISTERS = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp",
                     "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15",
                     "rip", "eflags", "fs_base", "gs_base")
ORIG_RAX = "orig_rax"
_MASK64 = (1 << 64) - 1


def connection_type(gdb_inferior) -> str:
    """'native', 'remote', 'extended-remote' ... of a ``gdb.Inferior`` (GDB's connection type)."""
    conn = getattr(gdb_inferior, "connection", None)
    return conn.type if conn is not None else "native"


def is_native(gdb_inferior) -> bool:
    """Whether GDB traces the process itself (not through gdbserver): /proc and tgkill reach it."""
    return connection_type(gdb_inferior) == "native"


class ProcessAccessError(NsbError):
    """GDB could not read or write the target (no process, bad address ...)."""


class RegisterSet(dict):
    """Saved registers of one thread: name -> unsigned 64-bit value."""

    def __init__(self, thread_num, values):
        super().__init__(values)
        self.thread_num = thread_num


class Inferior:
    """The current GDB inferior, as gdb-nsb uses it."""

    def __init__(self, inferior=None):
        self.gdb_inferior = inferior or gdb.selected_inferior()
        if self.gdb_inferior.pid == 0:
            raise ProcessAccessError("GDB has no live process (attach or run one first)")

    @property
    def pid(self) -> int:
        return self.gdb_inferior.pid

    @property
    def connection_type(self) -> str:
        """'native', 'remote', 'extended-remote' ... (GDB's connection type)."""
        return connection_type(self.gdb_inferior)

    @property
    def is_remote(self) -> bool:
        return self.connection_type != "native"

    def check_architecture(self):
        """Raise UnsupportedError unless the inferior is x86_64."""
        name = self.gdb_inferior.architecture().name()
        if name != "i386:x86-64":
            raise UnsupportedError("architecture %s is not supported (x86_64 only)" % name)

    # memory

    def read(self, addr: int, size: int) -> bytes:
        try:
            return bytes(self.gdb_inferior.read_memory(addr, size))
        except gdb.MemoryError as e:
            raise ProcessAccessError("cannot read %d bytes at 0x%x: %s" % (size, addr, e)) from None

    def write(self, addr: int, data: bytes):
        """Write through GDB (works into read-only and r-x pages without mprotect)."""
        if not data:
            return
        try:
            self.gdb_inferior.write_memory(addr, bytes(data))
        except gdb.MemoryError as e:
            raise ProcessAccessError("cannot write %d bytes at 0x%x: %s" % (len(data), addr, e)) from None

    # threads

    def threads(self):
        """Live threads, lowest GDB thread number first."""
        return sorted((t for t in self.gdb_inferior.threads() if t.is_valid()), key=lambda t: t.num)

    def thread_by_num(self, num):
        for t in self.threads():
            if t.num == num:
                return t
        raise ProcessAccessError("thread %d is gone" % num)

    def thread_by_tid(self, tid):
        for t in self.threads():
            if self.tid(t) == tid:
                return t
        raise ProcessAccessError("no thread with LWP %d in process %d" % (tid, self.pid))

    @staticmethod
    def tid(thread) -> int:
        """Kernel thread id (LWP) of a gdb.InferiorThread."""
        pid, lwp, tid = thread.ptid
        return lwp or tid or pid

    @contextlib.contextmanager
    def selected(self, thread):
        """Select ``thread`` (and its innermost frame) for the block, then restore the user's choice."""
        prev_thread = gdb.selected_thread()
        prev_frame = None
        try:
            prev_frame = gdb.selected_frame()
        except gdb.error:
            pass
        thread.switch()
        gdb.newest_frame().select()
        try:
            yield thread
        finally:
            if prev_thread is not None and prev_thread.is_valid():
                prev_thread.switch()
                if prev_frame is not None:
                    try:
                        if prev_frame.is_valid():
                            prev_frame.select()
                    except gdb.error:
                        pass

    # registers (of the selected thread, innermost frame: callers use selected())

    @staticmethod
    def read_register(name: str) -> int:
        return int(gdb.selected_frame().read_register(name)) & _MASK64

    @staticmethod
    def _literal(value: int) -> str:
        # A signed literal keeps GDB from complaining about values above INT64_MAX.
        v = value & _MASK64
        return str(v - (1 << 64) if v >= 1 << 63 else v)

    @classmethod
    def write_registers(cls, pairs):
        """Write (name, value) pairs in order, in one GDB command (comma operator: left to right)."""
        pairs = list(pairs)
        if pairs:
            gdb.execute("set var " + ", ".join("$%s = %s" % (n, cls._literal(v)) for n, v in pairs),
                        to_string=True)

    @classmethod
    def write_register(cls, name: str, value: int):
        cls.write_registers([(name, value)])

    def save_registers(self, thread) -> RegisterSet:
        """All general registers of ``thread`` including orig_rax, eflags, fs_base, gs_base."""
        with self.selected(thread):
            values = {r: self.read_register(r) for r in GENERAL_REGISTERS}
            values[ORIG_RAX] = self.read_register(ORIG_RAX)
        return RegisterSet(thread.num, values)

    def restore_registers(self, thread, saved: RegisterSet):
        """Write back ``saved``; orig_rax LAST, since writing $pc makes GDB set orig_rax = -1
        (a thread stopped in a blocking syscall would then not restart it: REFERENCE.md 6)."""
        with self.selected(thread):
            changed = [(r, saved[r]) for r in GENERAL_REGISTERS if self.read_register(r) != saved[r]]
            self.write_registers(changed + [(ORIG_RAX, saved[ORIG_RAX])])
            wrong = [r for r in saved if self.read_register(r) != saved[r]]
        if wrong:
            raise ProcessAccessError("thread %d: registers %s did not take their saved values"
                                     % (thread.num, ", ".join(wrong)))

    # mappings

    def mappings_text(self) -> str:
        return gdb.execute("info proc mappings", to_string=True)

    def mappings(self):
        """The memory map (list of gdb_nsb.mappings.Mapping), read through GDB."""
        try:
            return _mappings.parse_mappings(self.mappings_text())
        except (gdb.error, ValueError) as e:
            raise ProcessAccessError("cannot read the memory map of process %d: %s" % (self.pid, e)) from None

    def status_text(self, tid=None) -> str:
        """``info proc status`` of the process or one of its threads (works through gdbserver)."""
        arg = "" if tid is None else " %d" % tid
        try:
            return gdb.execute("info proc status" + arg, to_string=True)
        except gdb.error as e:
            raise ProcessAccessError("cannot read the status of %d: %s" % (tid or self.pid, e)) from None
