"""How the standalone tools start GDB with the extension loaded."""

import os
import subprocess

import gdb_nsb

PACKAGE_DIR = os.path.dirname(os.path.abspath(gdb_nsb.__file__))
REPO_LOADER = os.path.join(os.path.dirname(PACKAGE_DIR), "nsb-gdb.py")


def loader_commands():
    """GDB commands that load gdb-nsb in a fresh GDB (checkout or pip install)."""
    if os.path.exists(REPO_LOADER):
        return ["source " + REPO_LOADER]
    # Installed as a package: make this interpreter's site-packages visible to GDB's Python.
    import sysconfig
    paths = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], os.path.dirname(PACKAGE_DIR)}
    add = "; ".join("sys.path.insert(0, %r)" % p for p in sorted(paths))
    return ["python import sys; %s; import gdb_nsb.gdb_main" % add]


def gdb_base_args(batch=True):
    args = ["gdb"]
    if batch:
        args += ["-nx", "-batch"]
    args += ["-iex", "set debuginfod enabled off"]
    for c in loader_commands():
        args += ["-iex", c]
    return args


RELEASE_SECONDS = 30.0


def release_remote(address, pid=None, timeout=RELEASE_SECONDS):
    """Detach gdbserver at ``address`` from the process after our GDB died in a remote operation.

    gdbserver (without ``--once``) keeps the process stopped for the next connection, and the
    registers our GDB put back after an injected call live only in gdbserver's register cache until
    it resumes or detaches that thread: a gdbserver killed before then leaves the thread on the
    stub's registers, and the process crashes (found by tests/test_remote_kills.py).  A fresh GDB
    that connects and detaches makes gdbserver write them and let every thread run, with no signal.
    Returns None when released, else the reason in one line.
    """
    mode = "extended-remote" if pid is not None else "remote"
    # No local sysroot lookups: connecting must not fetch the program's files over the link.  SIGSTOP
    # not passed: gdbserver would hand each thread the SIGSTOP its own stop left as the thread's last
    # signal at detach, and the process would group-stop (seen on every kill point of a busy target);
    # the program's own signals GDB intercepted are passed on.
    argv = ["gdb", "-nx", "-batch", "-iex", "set debuginfod enabled off", "-iex", "set sysroot /nonexistent-nsb",
            "-ex", "set confirm off", "-ex", "handle SIGSTOP nostop noprint nopass",
            "-ex", "target %s %s" % (mode, address), "-ex", "detach"]
    try:
        run = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
                             start_new_session=True)
    except subprocess.TimeoutExpired:
        return "no answer from gdbserver at %s within %g s" % (address, timeout)
    except OSError as e:
        return "cannot run gdb: %s" % e
    detached = [l for l in run.stdout.splitlines() if l.startswith("[Inferior ") and l.endswith(" detached]")]
    if not detached:
        last = (run.stderr.strip().splitlines() or ["gdb exited %d" % run.returncode])[-1]
        return "gdbserver at %s did not detach: %s" % (address, last)
    if pid is not None and not any("(process %d)" % pid in l for l in detached):
        return "gdbserver at %s detached another process: %s" % (address, detached[0])
    return None


def set_priority(nice):
    """Run at niceness ``nice`` (this thread, so every GDB started from it inherits it).

    Lowering the niceness needs privilege (root, CAP_SYS_NICE): without it the caller's priority
    stays, silently, as a default must not fail a command.  Returns the niceness in effect.
    """
    current = os.getpriority(os.PRIO_PROCESS, 0)
    if nice is None or nice == current:
        return current
    try:
        os.setpriority(os.PRIO_PROCESS, 0, nice)
    except PermissionError:
        return current
    return nice


def set_session_priority(pid, nice):
    """Give the session of ``pid`` (a GDB started with its own session) the niceness ``nice``.

    With autogroup scheduling (Debian's default) each session is one scheduling group and a task's
    own niceness only counts inside it: GDB in its own session got one share among every other
    session's, whatever its niceness (measured at load 35-40: a revert took 22-37 s either way).
    The group's niceness is /proc/PID/autogroup.  Without autogroup (or without privilege) there is
    nothing to do here: the niceness GDB inherited from the runner is the one that counts.
    """
    if nice is None or nice >= 0:
        return False
    try:
        with open("/proc/%d/autogroup" % pid, "w") as f:
            f.write("%d" % nice)
        return True
    except OSError:  # no autogroup support, not permitted, or GDB already gone: keep the default
        return False


# auto goes real-time when more tasks are runnable than this many per CPU.  The shell's check in ./nsb
# (builtins: before Python starts) applies the same rule to /proc/stat.
BUSY_PER_CPU = 2


def busy(proc_stat, cpus):
    """True when /proc/stat's ``procs_running`` (the tasks running or waiting for a CPU now, the reader
    included) exceeds BUSY_PER_CPU per CPU of ``cpus``."""
    for line in proc_stat.splitlines():
        if line.startswith("procs_running "):
            return int(line.split()[1]) > BUSY_PER_CPU * max(1, cpus)
    return False


def resolve_policy(policy):
    """The policy ``auto`` stands for now (realtime on a busy machine, else normal); others unchanged."""
    if policy != "auto":
        return policy
    try:
        with open("/proc/stat") as f:
            text = f.read()
    except OSError:
        return "normal"
    return "realtime" if busy(text, len(os.sched_getaffinity(0))) else "normal"


def set_policy(policy, pid=0):
    """Run ``pid`` (0: this thread) under ``policy`` (options.POLICIES); True when it was set.

    realtime: SCHED_RR at the lowest real-time priority, inherited by everything the runner starts:
    GDB, GDB's helper threads and the `iconv -l` GDB runs at start-up.  All of it must be: a
    real-time GDB whose vfork child (iconv) was normal waited for that child in the kernel for up to
    60 s under load (bench/load_revert.py).  A real-time thread runs before every normal one, so
    whatever the load the runner and GDB wait for the CPU only for each other and the kernel;
    autogroup shares do not apply to them.  Their work is bounded by the deadline (the runner kills
    GDB) and the kernel keeps 5% of each CPU for normal tasks.  Needs privilege (root, CAP_SYS_NICE
    or RLIMIT_RTPRIO): without it the policy stays normal, silently, as a default must not fail a
    command.  normal: back to SCHED_OTHER if this was real-time.
    """
    if policy == "normal":
        # Back from real-time (the runner before it starts sessions for several processes): always permitted.
        if os.sched_getscheduler(pid) != os.SCHED_RR:
            return False
        os.sched_setscheduler(pid, os.SCHED_OTHER, os.sched_param(0))
        return True
    if policy != "realtime":
        return False
    try:
        os.sched_setscheduler(pid, os.SCHED_RR, os.sched_param(os.sched_get_priority_min(os.SCHED_RR)))
    except PermissionError:  # not permitted: the normal policy stays
        return False
    return True


def raise_gdb(pid, args):
    """A GDB just started by the runner: its session's niceness (--nice); its policy it inherited."""
    set_session_priority(pid, getattr(args, "nice", None))
