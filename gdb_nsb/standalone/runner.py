"""The standalone runner: `nsb patch|revert|list|check` over `gdb -batch`.

Each process is handled by its own `gdb -batch -nx` session that loads the
extension, attaches (or connects to a gdbserver), runs the matching nsb-*
command and detaches.  The command writes its outcome as JSON into a result
file; GDB's own exit status is never trusted: no result file means failure.
"""

import concurrent.futures
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

from gdb_nsb import errors
from gdb_nsb.standalone import gdbrun

EXIT_CODES = [
    (0, "done (check: applied)"),
    (1, "usage error"),
    (2, "not applied (check: not applied but applicable now; revert: patch not applied)"),
    (3, "busy: no safe point reached in time (check: not applied and not applicable now)"),
    (4, "target/patch mismatch (build-id, entry bytes, symbols)"),
    (5, "already applied"),
    (6, "process not found"),
    (7, "process not attachable (permissions, another tracer, ptrace_scope)"),
    (8, "partial state found in the process"),
    (9, "bad patch file (missing, not ELF, no or corrupt vzpatch section)"),
    (10, "internal error or GDB failure"),
    (11, "generate: debug information missing or unusable"),
    (12, "generate: the patch is refused (unknown symbol, writable data ...)"),
    (13, "unsupported (relocation type, language ...)"),
    (14, "refused by the environment (seccomp filter, policy)"),
    (15, "timeout: deadline passed, everything rolled back"),
    (16, "registry corrupt: read-only mode"),
]

EPILOG = "exit codes:\n" + "\n".join("  %3d  %s" % c for c in EXIT_CODES) + (
    "\n\nWith several processes the exit code is that of the first one that failed.")

GRACE_SECONDS = 15.0  # the runner kills GDB only this long after --timeout


def add_common(parser, need_patch=True, patch_help="live patch file"):
    parser.add_argument("-p", "--pid", action="append", default=[], metavar="PID[,PID...]",
                        help="target process; repeat or separate with commas for several")
    if need_patch:
        parser.add_argument("-f", "--file", dest="patch", metavar="PATCH", help=patch_help)
    parser.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    parser.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS",
                        help="hard bound: roll back and detach when it passes (default 60)")
    parser.add_argument("--remote", metavar="HOST:PORT",
                        help="reach the process through a running gdbserver (with -p: extended-remote + attach)")
    parser.add_argument("-v", dest="verbose", type=int, default=0, metavar="N", help="detail level (0-3)")
    parser.epilog = EPILOG


def add_mutating(parser):
    parser.add_argument("--dry-run", action="store_true", help="compute and check everything, write nothing")
    parser.add_argument("--retries", type=int, default=None, metavar="N",
                        help="safe-point tries before giving up (default 25)")
    parser.add_argument("--strategy", choices=("retry", "run-out"), default=None,
                        help="how to reach a safe point: retry with growing delays, or run busy threads out")
    parser.add_argument("--allow-seccomp", action="store_true",
                        help="apply even though the process has a seccomp filter")


def parse_pids(values):
    pids = []
    for v in values:
        for part in str(v).split(","):
            part = part.strip()
            if not part:
                continue
            if not part.isdigit() or int(part) <= 0:
                raise errors.UsageError("not a process id: %r" % part)
            if int(part) not in pids:
                pids.append(int(part))
    return pids


def preflight(pid):
    """Classify a local pid before starting GDB: not found (6) / not attachable (7)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        raise errors.ProcessNotFoundError("process %d not found" % pid)
    except PermissionError:
        raise errors.NotAttachableError("process %d: not permitted to trace it (other user)" % pid)
    try:
        with open("/proc/%d/status" % pid) as f:
            status = dict(line.split(":", 1) for line in f if ":" in line)
    except OSError:
        raise errors.ProcessNotFoundError("process %d not found" % pid)
    if status.get("State", "").strip().startswith("Z"):
        raise errors.ProcessNotFoundError("process %d is a zombie" % pid)
    tracer = int(status.get("TracerPid", "0").strip() or 0)
    if tracer:
        raise errors.NotAttachableError("process %d is already traced by pid %d" % (pid, tracer))
    if pid == os.getpid():
        raise errors.NotAttachableError("process %d is the runner itself" % pid)


def ensure_running(pid):
    """After GDB is gone, a target left in group-stop (T) is continued."""
    for _ in range(50):
        states = _thread_states(pid)
        if not states:
            return
        if not any(s == "T" for s in states.values()):
            if not any(s == "t" for s in states.values()):
                return
        else:
            try:
                os.kill(pid, signal.SIGCONT)
            except OSError:
                return
        time.sleep(0.02)


def _thread_states(pid):
    out = {}
    try:
        tids = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return out
    for tid in tids:
        try:
            with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
                data = f.read()
            out[tid] = data[data.rindex(")") + 2]
        except OSError:
            pass
    return out


def run_one(command, pid, args, extra):
    """Run one GDB session for one process; returns the per-process result dict."""
    started = time.monotonic()
    doc = {"pid": pid, "command": command}
    try:
        if pid is not None and not args.remote:
            preflight(pid)
    except errors.NsbError as e:
        doc.update(result="error", code=e.exit_code, message=str(e), error=type(e).__name__)
        return doc
    fd, result_file = tempfile.mkstemp(prefix="nsb-result-", suffix=".json")
    os.close(fd)
    os.unlink(result_file)  # the extension creates it; absence means GDB failed
    try:
        gdb_cmd = "nsb-%s --result-file %s" % (command, result_file)
        for opt in extra:
            gdb_cmd += " " + opt
        argv = gdbrun.gdb_base_args(batch=True)
        if args.remote:
            if pid is not None:
                argv += ["-ex", "target extended-remote " + args.remote, "-ex", "attach %d" % pid]
            else:
                argv += ["-ex", "target remote " + args.remote]
        else:
            argv += ["-p", str(pid)]
        argv += ["-ex", gdb_cmd, "-ex", "detach"]
        if args.verbose >= 3:
            print("nsb: running %s" % " ".join(argv), file=sys.stderr)
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
        killed = False
        try:
            out, err = proc.communicate(timeout=args.timeout + GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            killed = True
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
        if pid is not None and not args.remote:
            ensure_running(pid)
        doc["timings"] = {"total_s": round(time.monotonic() - started, 4)}
        if os.path.exists(result_file):
            with open(result_file) as f:
                inner = json.load(f)
            timings = inner.pop("timings", {})
            doc.update(inner)
            doc["timings"].update(timings)
        elif killed:
            doc.update(result="error", code=errors.TimeoutExpired.exit_code,
                       message="GDB did not finish within %.0f s (+%.0f s grace); it was killed and the process "
                               "continued" % (args.timeout, GRACE_SECONDS), error="TimeoutExpired")
        else:
            doc.update(result="error", code=_classify_gdb_failure(err), message=_gdb_failure_message(err, out),
                       error="GdbFailure")
        if args.verbose >= 2:
            doc["gdb_output"] = out
        if args.verbose >= 1 and err.strip():
            doc["gdb_stderr"] = err
    finally:
        if os.path.exists(result_file):
            os.unlink(result_file)
    return doc


def _classify_gdb_failure(err):
    if "ptrace: Operation not permitted" in err:
        return errors.NotAttachableError.exit_code
    if "ptrace: No such process" in err:
        return errors.ProcessNotFoundError.exit_code
    return 10


def _gdb_failure_message(err, out):
    lines = [l.strip() for l in (err or "").splitlines() if l.strip() and "warning:" not in l]
    if "ptrace: Operation not permitted" in err:
        return "GDB could not attach: ptrace: Operation not permitted (check /proc/sys/kernel/yama/ptrace_scope)"
    if lines:
        return "GDB failed without a result: %s" % lines[-1]
    return "GDB failed without a result"


def run(command, args, extra):
    pids = parse_pids(args.pid)
    if getattr(args, "all_of", False):
        from gdb_nsb.standalone.discover import processes_mapping_patch_target
        pids += [p for p in processes_mapping_patch_target(args.patch) if p not in pids]
        if not pids:
            raise errors.ProcessNotFoundError("no process maps the target of %s" % args.patch)
    if not pids and not args.remote:
        raise errors.UsageError("give a process with -p PID (or --remote HOST:PORT)")
    targets = pids or [None]
    if len(targets) == 1:
        docs = [run_one(command, targets[0], args, extra)]
    else:
        with concurrent.futures.ThreadPoolExecutor(max_workers=min(4, len(targets))) as pool:
            docs = list(pool.map(lambda p: run_one(command, p, args, extra), targets))
    code = 0
    for d in docs:
        if d.get("code", 10) != 0:
            code = d.get("code", 10)
            break
    if args.json:
        result = "ok" if code == 0 else ("error" if all(d.get("code") for d in docs) else "mixed")
        print(json.dumps({"command": command, "result": result, "exit_code": code, "processes": docs},
                         indent=2, sort_keys=True))
    else:
        for d in docs:
            _print_human(d, len(docs) > 1, args.verbose)
    return code


def _print_human(doc, several, verbose):
    prefix = ("pid %s: " % doc["pid"]) if several else ""
    stream = sys.stdout if doc.get("code", 10) in (0, 2) else sys.stderr
    for line in doc.get("lines", []):
        print(prefix + line, file=sys.stdout)
    if doc.get("message") and doc.get("message") not in doc.get("lines", []):
        print(prefix + ("nsb: " if stream is sys.stderr else "") + doc["message"], file=stream)
    if verbose >= 1 and doc.get("gdb_stderr"):
        print(doc["gdb_stderr"], file=sys.stderr)
    if verbose >= 2 and doc.get("gdb_output"):
        print(doc["gdb_output"], file=sys.stderr)


def quote(arg):
    """Quote one argument for a GDB command line parsed with gdb.string_to_argv."""
    return '"%s"' % str(arg).replace("\\", "\\\\").replace('"', '\\"')
