"""Environment checks for ``nsb-check`` (REFERENCE.md 2, Check).

``assess`` is the pure core: it reads texts and numbers and returns
findings.  ``collect`` is the thin GDB side that gathers them: ``info proc
status`` (works through gdbserver) and the local ``ptrace_scope`` (meaningful
only for a native attach: it is the runner's machine).  Reading only: check
and list are passive (no injected system call, no write).  MDWE
(PR_SET_MDWE) is not probed: /proc shows no field for it, and apply never
gains PROT_EXEC, which is all it refuses.
"""

import os
from dataclasses import dataclass
from typing import Iterable, List, Optional

SEVERITY_REFUSE = "refuse"    # apply refuses unless explicitly allowed
SEVERITY_WARN = "warning"
SEVERITY_INFO = "info"

PTRACE_SCOPE_PATH = "/proc/sys/kernel/yama/ptrace_scope"


@dataclass(frozen=True)
class Finding:
    """One fact about the environment that matters for patching."""

    code: str
    message: str
    severity: str = SEVERITY_WARN

    def __str__(self):
        return "%s: %s" % (self.code, self.message)


def _field(status_text: str, name: str) -> Optional[str]:
    # Plain string search: a regex compiled per field cost milliseconds inside the stop.
    for line in status_text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key == name:
            return value.strip()
    return None


def assess(status_text: str, expected_tracers: Optional[Iterable[int]] = None,
           ptrace_scope: Optional[str] = None) -> List[Finding]:
    """Findings from a process's ``/proc/PID/status`` text and side facts.

    ``expected_tracers``: pids allowed as TracerPid (GDB itself); None means
    tracer unknown (through gdbserver), then a tracer is only reported as info.
    ``ptrace_scope``: content of the Yama sysctl, None if absent.
    """
    out = []
    mode = _field(status_text, "Seccomp")
    filters = _field(status_text, "Seccomp_filters")
    if mode == "2":
        out.append(Finding("seccomp-filter",
                           "process has a seccomp filter (%s installed): an injected mmap could be refused "
                           "or kill the process" % (filters or "?"), SEVERITY_REFUSE))
    elif mode == "1":
        out.append(Finding("seccomp-strict",
                           "process is in seccomp strict mode: any injected syscall kills it", SEVERITY_REFUSE))
    elif mode is None:
        out.append(Finding("seccomp-unknown", "the process status shows no Seccomp field", SEVERITY_INFO))
    tracer = _field(status_text, "TracerPid")
    if tracer is not None and tracer != "0":
        tpid = int(tracer)
        if expected_tracers is None:
            out.append(Finding("tracer", "process is traced by pid %d (through gdbserver this is the server)"
                               % tpid, SEVERITY_INFO))
        elif tpid not in set(expected_tracers):
            out.append(Finding("other-tracer", "process is already traced by pid %d" % tpid, SEVERITY_REFUSE))
    if ptrace_scope is not None:
        scope = ptrace_scope.strip()
        meaning = {"1": "only descendants or CAP_SYS_PTRACE may attach",
                   "2": "only CAP_SYS_PTRACE may attach",
                   "3": "no process may attach"}.get(scope)
        if meaning:
            out.append(Finding("ptrace-scope", "kernel.yama.ptrace_scope=%s: %s" % (scope, meaning),
                               SEVERITY_REFUSE if scope == "3" else SEVERITY_INFO))
    return out


def read_ptrace_scope(path: str = PTRACE_SCOPE_PATH) -> Optional[str]:
    """The local Yama setting, None when Yama is not in the kernel."""
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def collect(inferior) -> List[Finding]:
    """Gather and assess the environment of the current inferior (GDB side; reads only)."""
    status = inferior.status_text()
    remote = inferior.is_remote
    expected = None if remote else {os.getpid()}
    scope = None if remote else read_ptrace_scope()
    findings = assess(status, expected, scope)
    if remote:
        findings.append(Finding("ptrace-scope-unknown", "ptrace_scope of the remote machine is not checked",
                                SEVERITY_INFO))
    return findings
