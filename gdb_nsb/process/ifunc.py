"""IFUNC resolvers run in the target, inside the stop, for patch symbols nothing in the process resolved.

The dynamic loader calls a resolver when it binds a reference (at load time, or lazily in whichever
thread first calls through the PLT).  A patch can refer to an IFUNC that nothing in the process
referred to before: libm's ``ceil`` in a patch built ``-O0`` against a program whose ``-O2`` code
inlined it.  No GOT slot holds the implementation, so the binder asks for the resolver to run
(``IfuncNeedsResolver``); this module runs it the way lazy binding would, as a GDB inferior call
on one stopped thread, every other thread kept stopped (``scheduler-locking on``), user breakpoints
off, unwound if a signal arrives.  glibc's resolvers read the CPU features ld.so recorded and
return; a resolver that does more is the program's own code, run as its own lazy binding would.
The result must be code: an address in an executable mapping, or the apply is refused.
"""

import contextlib

import gdb

from gdb_nsb import errors
from gdb_nsb.process.callbacks import thread_for_call, user_breakpoints_off
from gdb_nsb.process.inferior import Inferior
from gdb_nsb.process.session_state import RESOLVER_CALL, changed


def run_resolvers(inf: Inferior, problems) -> dict:
    """{resolver address: implementation} for each problem; UnsupportedError naming the symbol when a
    resolver fails or returns something that is not code."""
    executable = [(m.start, m.end) for m in inf.mappings() if m.perms is None or "x" in m.perms]
    results = {}
    previous = gdb.selected_thread()
    with contextlib.ExitStack() as stack:
        stack.callback(lambda: previous.switch() if previous is not None and previous.is_valid() else None)
        stack.enter_context(changed(RESOLVER_CALL))
        stack.enter_context(user_breakpoints_off())
        thread_for_call(inf).switch()
        for p in problems:
            try:
                value = gdb.parse_and_eval("((void *(*)(void)) %d)()" % p.resolver_addr)
            except gdb.error as e:
                raise errors.UnsupportedError("the IFUNC resolver of %s at %#x failed when run in the process: %s"
                                              % (p.symbol, p.resolver_addr, str(e).splitlines()[0]))
            impl = int(value) & 0xFFFFFFFFFFFFFFFF
            if not any(lo <= impl < hi for lo, hi in executable):
                raise errors.UnsupportedError("the IFUNC resolver of %s at %#x returned %#x, which is not code "
                                              "in the process" % (p.symbol, p.resolver_addr, impl))
            results[p.resolver_addr] = impl
    return results
