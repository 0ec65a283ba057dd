"""The test harness: build a C target, start it, attach GDB, read its maps and memory, compare them
with the file, and run ``nsb``; every test uses these and nothing of its own.

* ``cbuild``: compile C sources (cached per content and flags), patch .so files, patches bound to a
  target (``bind_patch``), the FIFO reader thread shared by the targets that have one;
* ``process``: ``Target`` (a started program with a line protocol on stdin/stdout, killed at exit),
  /proc readers (state, threads, maps, memory, tracer), the load bias and function bytes as the
  product computes them (``memory_and_file``, ``entry_state``);
* ``gdbsession``: ``run_gdb`` (one GDB batch session, results as ``NSB-RESULT:`` lines),
  ``GdbServer``;
* ``cli``: ``nsb(*args)`` -> ``Run`` (``returncode``, ``stdout``, ``stderr``; with ``--json`` the
  schema-checked ``doc`` and ``process``), ``start_nsb`` / ``finish`` for a runner in the background.

The target programs themselves, each a C source with its line protocol and patches, are the other
modules of this package: ``engine`` (flavors and layers), ``stress`` (16 signalling workers, fork,
exec, exit), ``live`` (remote, dlopen, fork, replaced executable), ``fifo`` (process layer: a storm of
signals, seccomp), ``runner`` (two functions, for the runner's commands) and ``autolive`` (auto mode:
workers counting the values unit_value() gives).
"""

from .cbuild import CACHE, FIXTURES, FLAVOR_FLAGS, INCLUDE, PATCH_FLAGS, ROOT, bind_patch, build, build_patch, key, tool
from .cli import SCHEMA, Run, finish, nsb, only_process, start_nsb, validate
from .gdbsession import INFERIOR_PRELUDE, PROC_PRELUDE, GdbResult, GdbServer, free_port, run_gdb, without_gdb
from .process import (Target, child_named, entry_state, file_bytes, function_bytes, function_symbol, is_mapped,
                      load_bias, make_fifo, mappings, maps, memory_and_file, memory_matches_file, proc_state,
                      read_mem, rss_kb, silence_report, status_field, thread_states, tracer_pid, wait_for,
                      wait_progress, wait_running, write_fifo, write_mem)

__all__ = [
    "child_named",
    "CACHE", "FIXTURES", "FLAVOR_FLAGS", "INCLUDE", "PATCH_FLAGS", "ROOT", "bind_patch", "build", "build_patch", "key",
    "tool",
    "SCHEMA", "Run", "finish", "nsb", "only_process", "start_nsb", "validate",
    "INFERIOR_PRELUDE", "PROC_PRELUDE", "GdbResult", "GdbServer", "free_port", "run_gdb", "without_gdb",
    "Target", "entry_state", "file_bytes", "function_bytes", "function_symbol", "is_mapped", "load_bias", "make_fifo",
    "mappings", "maps", "memory_and_file", "memory_matches_file", "proc_state", "read_mem", "rss_kb", "silence_report",
    "status_field",
    "thread_states", "tracer_pid", "wait_for", "wait_progress", "wait_running", "write_fifo", "write_mem",
]
