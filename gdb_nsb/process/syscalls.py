"""Raw system calls run by one stopped thread of the target (REFERENCE.md 2.2, 6).

A thread executes ``syscall`` at its own pc: we save its registers and the
bytes at pc, write the stub (``syscall; int3``) there, load the arguments,
let that thread alone run (``scheduler-locking on``) to an internal, silent
GDB breakpoint on the int3 (a bare int3 made GDB print "received signal
SIGTRAP" and a frame at the prompt), read ``rax``, and put bytes and
registers back (``orig_rax`` last).  No libc, no symbols needed.

Signals.  GDB holds a thread's pending stop signal and passes it on the next
resume; the kernel may also hold signals queued for the thread or the
process.  Either would be delivered on our ``stepi`` and its handler would
run on the injected registers.  So we (1) prefer a thread whose last stop was
no real signal and which has nothing deliverable queued, and (2) make every
signal ``stop`` in GDB during the step: a signal that still arrives stops the
thread before it runs a handler; we restore that thread, leave the signal with
GDB (it is passed on the next resume, never discarded) and retry on another
thread, a bounded number of times.
"""

import contextlib
import errno
import functools
import os
import re
import time

import gdb

from gdb_nsb.errors import NsbError
from gdb_nsb.process import faults
from gdb_nsb.process.inferior import Inferior
from gdb_nsb.process.session_state import INJECTED_CALL, changed, signals_handled

SYS_close = 3
SYS_mmap = 9
SYS_mprotect = 10
SYS_munmap = 11
SYS_getpid = 39
SYS_ftruncate = 77
SYS_prctl = 157
SYS_memfd_create = 319

PROT_NONE, PROT_READ, PROT_WRITE, PROT_EXEC = 0, 1, 2, 4
MAP_SHARED, MAP_PRIVATE, MAP_FIXED, MAP_ANONYMOUS = 0x01, 0x02, 0x10, 0x20
MAP_FIXED_NOREPLACE = 0x100000
MFD_CLOEXEC = 1

SIGTRAP, SIGSTOP = 5, 19
_RESTART_CODES = {-512, -513, -514, -516}  # ERESTARTSYS, ERESTARTNOINTR, ERESTARTNOHAND, ERESTART_RESTARTBLOCK
_MASK64 = (1 << 64) - 1
_ARG_REGISTERS = ("rdi", "rsi", "rdx", "r10", "r8", "r9")


@functools.lru_cache(maxsize=None)
def stub() -> bytes:
    """``syscall; int3``, assembled at the first injection (not at import: keystone costs ~25 ms of CPU
    in every GDB session, and most sessions inject nothing)."""
    import keystone
    ks = keystone.Ks(keystone.KS_ARCH_X86, keystone.KS_MODE_64)
    # int3 behind the syscall: should the step ever run on, the thread traps
    # instead of executing whatever follows.
    code, _ = ks.asm("syscall; int3")
    return bytes(code)


SYSCALL_LEN = 2  # the bytes of `syscall`; the stepped thread stops at pc + 2


class _StubEnd(gdb.Breakpoint):
    """Where the stepped thread stops after the injected ``syscall`` (on the stub's int3): internal and
    silent, so GDB reports no stop of its own there."""

    def __init__(self, addr, thread_num):
        super().__init__("*%#x" % addr, gdb.BP_BREAKPOINT, internal=True)
        self.silent = True
        self.thread = thread_num


class InjectionError(NsbError):
    """An injected system call could not be run (no usable thread, odd stop ...)."""


class SignalsHeld(InjectionError):
    """No thread can run an injected call now: each holds or has queued a signal.  Nothing ran; the
    process must run (its signals delivered) before the next try."""


class SyscallFailed(NsbError):
    """An injected system call returned an error; ``errno`` and ``errno_name`` say which."""

    def __init__(self, what, err):
        self.errno = err
        self.errno_name = errno.errorcode.get(err, "E%d" % err)
        super().__init__("%s failed in the target: %s (%s)" % (what, self.errno_name, os.strerror(err)))


def _signed(v: int) -> int:
    v &= _MASK64
    return v - (1 << 64) if v >= 1 << 63 else v


def _every_signal_stops(table):
    """Every signal stops the inferior in GDB (``stop`` implies ``print``); whether it passes is kept."""
    return {sig: (True, True, pas) for sig, (_stop, _prt, pas) in table.items()}


def _sigmask(status_text, field):
    m = re.search(r"^%s:\s*([0-9a-fA-F]+)" % field, status_text, re.M)
    return int(m.group(1), 16) if m else 0


class SyscallInjector:
    """Runs raw system calls in the target on one of its stopped threads.

    ``with injector.session():`` brackets several calls so the GDB settings
    are changed once; ``call`` opens a session of its own when none is open.
    """

    def __init__(self, inferior: Inferior = None, max_attempts: int = 8):
        self.inferior = inferior or Inferior()
        self.inferior.check_architecture()
        self.max_attempts = max_attempts
        self._depth = 0
        self._preferred = None   # GDB thread number that ran the last call
        self._dirty = set()      # threads that took a signal stop in this session
        self.attempts = 0        # steps run (for tests and benchmarks)
        self.interruptions = 0   # steps a signal interrupted

    def prefer(self, thread):
        """Try ``thread`` first for the next calls (it is still skipped if a signal is pending for it)."""
        self._preferred = thread.num

    @property
    def last_thread_num(self):
        """GDB number of the thread that ran the last successful call."""
        return self._preferred

    # --- session ---------------------------------------------------------

    @contextlib.contextmanager
    def session(self):
        if self._depth:
            self._depth += 1
            try:
                yield self
            finally:
                self._depth -= 1
            return
        running = [t.num for t in self.inferior.threads() if not t.is_stopped()]
        if running:
            raise InjectionError("threads %s of process %d are running; every thread must be stopped"
                                 % (", ".join(map(str, running)), self.inferior.pid))
        if gdb.parameter("non-stop"):
            # Measured with GDB 13: a `stepi` run from Python in non-stop mode returns while the
            # thread still runs, so the step's end cannot be awaited here.  Refuse cleanly.
            raise InjectionError("injected syscalls need all-stop mode (set non-stop off before attaching)")
        with contextlib.ExitStack() as stack:
            stack.enter_context(signals_handled(_every_signal_stops))
            stack.enter_context(changed(INJECTED_CALL))
            self._depth = 1
            self._dirty = set()
            try:
                yield self
            finally:
                self._depth = 0

    # --- thread choice ---------------------------------------------------

    def _held_signal(self, thread):
        """Signal number of the thread's current ptrace stop (what GDB would pass), or None."""
        with self.inferior.selected(thread):
            try:
                return int(gdb.parse_and_eval("$_siginfo")["si_signo"])
            except gdb.error:
                return None

    def _kernel_pending(self, thread):
        """Signals queued in the kernel that this thread would take on resume (bit n-1 = signal n)."""
        try:
            text = self.inferior.status_text(Inferior.tid(thread))
        except NsbError:
            return 0
        pending = _sigmask(text, "SigPnd") | _sigmask(text, "ShdPnd")
        # GDB's own SIGSTOP (sent to stop threads) is absorbed by GDB, never delivered.
        return pending & ~_sigmask(text, "SigBlk") & ~(1 << (SIGSTOP - 1))

    def clean(self, thread):
        """Whether ``thread`` could run code now without taking a signal first (held by GDB or queued)."""
        if thread.num in self._dirty or not thread.is_valid() or not thread.is_stopped():
            return False
        sig = self._held_signal(thread)
        if sig not in (None, 0, SIGTRAP, SIGSTOP):
            return False
        return self._kernel_pending(thread) == 0

    def _choose(self):
        """A thread to step, or None.  The thread of the previous call is tried first."""
        threads = [t for t in self.inferior.threads() if t.num not in self._dirty]
        threads.sort(key=lambda t: (t.num != self._preferred, t.num))
        for t in threads:
            if self.clean(t):
                return t
        # Only threads with a kernel-queued signal are left: stepping one makes it
        # stop on that signal, which then stays with GDB for delivery later.
        for t in threads:
            if t.is_valid() and t.is_stopped() and self._held_signal(t) in (None, 0, SIGTRAP, SIGSTOP):
                return t
        return None

    # --- the call --------------------------------------------------------

    def call(self, nr: int, *args: int) -> int:
        """Run syscall ``nr`` with up to six arguments; the raw (signed) rax.

        Returns negative values as they are; see ``check`` for errno handling.
        """
        if len(args) > 6:
            raise ValueError("a system call takes at most six arguments")
        with self.session():
            for _ in range(self.max_attempts):
                thread = self._choose()
                if thread is None:
                    break
                done, value = self._attempt(thread, nr, args)
                if done:
                    self._preferred = thread.num
                    faults.point("after-syscall", "syscall %d" % nr)
                    return value
                self._dirty.add(thread.num)
        raise SignalsHeld("no thread of process %d can run syscall %d now: every thread holds or has "
                          "queued a signal (left for delivery); let the process run, then retry"
                          % (self.inferior.pid, nr))

    def require_clean_thread(self):
        """SignalsHeld unless some thread could run a call now without taking a signal first.

        Reads only ($_siginfo, /proc): lets an operation give up before its first change, rather
        than roll back changes whose undoing needs an injected call too."""
        if not any(self.clean(t) for t in self.inferior.threads()):
            raise SignalsHeld("no thread of process %d can run an injected system call now: every thread "
                              "holds or has queued a signal" % self.inferior.pid)

    def check(self, what: str, nr: int, *args: int) -> int:
        """``call``, raising SyscallFailed with the errno name on a negative return."""
        v = self.call(nr, *args)
        if -4096 < v < 0:
            raise SyscallFailed(what, -v)
        return v

    def _attempt(self, thread, nr, args):
        """One step on ``thread``: (True, rax) if the syscall ran, (False, None) if a signal came first."""
        inf = self.inferior
        saved = inf.save_registers(thread)
        pc = saved["rip"]
        original = inf.read(pc, len(stub()))
        stops = []

        def on_stop(event):
            stops.append(getattr(event, "stop_signal", None))

        self.attempts += 1
        inf.write(pc, stub())
        try:
            with inf.selected(thread):
                # orig_rax = -1: no syscall restart logic may touch our step.
                inf.write_registers([("rax", nr)] + list(zip(_ARG_REGISTERS, args)) + [("orig_rax", -1)])
                gdb.events.stop.connect(on_stop)
                # GDB's own breakpoint on the int3: a stop GDB knows as its own prints nothing,
                # where a bare int3 printed 'received signal SIGTRAP' and a frame at the prompt.
                end = _StubEnd(pc + SYSCALL_LEN, thread.num)
                try:
                    # Run to the int3 behind the syscall with PTRACE_CONT, not stepi: a single-step
                    # leaves the thread's trap flag armed until GDB next resumes it, so a GDB killed
                    # before its detach made that thread die of SIGTRAP at its next syscall exit.
                    gdb.execute("continue", to_string=True)
                finally:
                    gdb.events.stop.disconnect(on_stop)
                    if end.is_valid():
                        end.delete()
                if not thread.is_valid():
                    raise InjectionError("thread %d vanished during an injected syscall" % saved.thread_num)
                new_pc = inf.read_register("rip")
                rax = _signed(inf.read_register("rax"))
        finally:
            inf.write(pc, original)
            if thread.is_valid():
                inf.restore_registers(thread, saved)
        signal = next((s for s in stops if s), None)
        if new_pc in (pc + SYSCALL_LEN, pc + len(stub())) and rax not in _RESTART_CODES:
            # The syscall ran.  A signal reported with it stays with GDB for the
            # thread and is delivered on the restored registers at the next resume.
            return True, rax
        if new_pc in (pc, pc + SYSCALL_LEN) and (signal or rax in _RESTART_CODES):
            self.interruptions += 1
            return False, None
        raise InjectionError("thread %d stopped at 0x%x after an injected syscall at 0x%x (%s)"
                             % (saved.thread_num, new_pc, pc, signal or "no signal"))

    # --- wrappers --------------------------------------------------------

    def mmap(self, addr, length, prot, flags, fd=-1, offset=0) -> int:
        """mmap in the target.  With ``addr`` the mapping must land exactly there
        (MAP_FIXED_NOREPLACE, never MAP_FIXED); otherwise it is undone and this fails."""
        if flags & MAP_FIXED:
            raise ValueError("MAP_FIXED may replace existing mappings; use an address with MAP_FIXED_NOREPLACE")
        if addr:
            flags |= MAP_FIXED_NOREPLACE
        got = self.check("mmap(0x%x, 0x%x)" % (addr or 0, length), SYS_mmap, addr or 0, length, prot, flags,
                         fd & _MASK64, offset)
        got &= _MASK64
        if addr and got != addr:
            # Kernels before 4.17 take MAP_FIXED_NOREPLACE as a mere hint.
            self.munmap(got, length)
            raise InjectionError("mmap at 0x%x landed at 0x%x (kernel ignores MAP_FIXED_NOREPLACE)"
                                 % (addr, got))
        return got

    def munmap(self, addr, length):
        self.check("munmap(0x%x, 0x%x)" % (addr, length), SYS_munmap, addr, length)

    def mprotect(self, addr, length, prot):
        self.check("mprotect(0x%x, 0x%x, %d)" % (addr, length, prot), SYS_mprotect, addr, length, prot)

    def memfd_create(self, name_addr, flags=MFD_CLOEXEC) -> int:
        """memfd_create with the name already written at ``name_addr`` in the target."""
        return self.check("memfd_create", SYS_memfd_create, name_addr, flags)

    def ftruncate(self, fd, length):
        self.check("ftruncate(%d, %d)" % (fd, length), SYS_ftruncate, fd, length)

    def close(self, fd):
        self.check("close(%d)" % fd, SYS_close, fd)


def time_one_call(injector: SyscallInjector, nr=SYS_getpid, count=50) -> float:
    """Mean seconds per injected call (inside one session), for benchmarks."""
    with injector.session():
        injector.call(nr)
        t0 = time.perf_counter()
        for _ in range(count):
            injector.call(nr)
        return (time.perf_counter() - t0) / count
