"""The standalone runner: `nsb patch|revert|list|check` over `gdb -batch`.

Each process is handled by its own `gdb -batch -nx` session that loads the
extension, attaches (or connects to a gdbserver), runs the matching nsb-*
command and detaches.  The command writes its outcome as JSON into a result
file; GDB's own exit status is never trusted: no result file means failure,
and a failed attach overrides whatever the command wrote afterwards (GDB runs
the remaining -ex commands even when `-p PID` failed).

Deadlines: ``--timeout`` is enforced inside the extension (roll back, detach).
The runner kills GDB only ``GRACE_SECONDS`` later (environment variable
NSB_GRACE_SECONDS overrides it, for tests) and then makes sure the target is
running, not left in group-stop.
"""

import json
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Dict, Tuple

from gdb_nsb import errors, options, timeline
from gdb_nsb.fileid import file_identity
from gdb_nsb.procstate import comm, ensure_running
from gdb_nsb.standalone import gdbrun, progress


def _exit_code_line(code, meaning, reserved):
    # The table in errors.py is written for the README (Markdown); help is plain text.
    return "  %3d  %s%s" % (code, "reserved: " if reserved else "", meaning.replace("`", ""))


DEFAULT_GRACE_SECONDS = 15.0
EPILOG = "exit codes:\n" + "\n".join(_exit_code_line(*row) for row in errors.exit_codes()) + (
    "\n\nWith several processes the exit code is that of the first one (in -p order) that failed."
    "\nPast --timeout, GDB itself is killed %g s later (NSB_GRACE_SECONDS)." % DEFAULT_GRACE_SECONDS)



def grace_seconds():
    """How long after --timeout the runner kills GDB (NSB_GRACE_SECONDS overrides the default 15)."""
    value = os.environ.get("NSB_GRACE_SECONDS")
    if value is None:
        return DEFAULT_GRACE_SECONDS
    try:
        grace = float(value)
    except ValueError:
        raise errors.UsageError("NSB_GRACE_SECONDS is not a number: %r" % value)
    if grace < 0:
        raise errors.UsageError("NSB_GRACE_SECONDS must not be negative: %r" % value)
    return grace


def add_arguments(parser, command):
    """The runner's options of ``command`` (declared in gdb_nsb/options.py), and the exit-code table."""
    options.add_arguments(parser, command, options.RUNNER)
    parser.epilog = EPILOG


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


def _status(pid):
    with open("/proc/%d/status" % pid) as f:
        return dict((k, v.strip()) for k, v in (line.split(":", 1) for line in f if ":" in line))


def preflight(pid):
    """Classify a local pid before starting GDB: not found (6) / not attachable (7).

    Returns whether the process was already stopped (state T) by someone
    else: the runner then leaves it stopped afterwards.
    """
    if pid == os.getpid():
        raise errors.NotAttachableError("process %d is the runner itself" % pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        raise errors.ProcessNotFoundError("process %d not found" % pid)
    except PermissionError:
        raise errors.NotAttachableError("process %d: not permitted to trace it (it belongs to another user)" % pid)
    try:
        status = _status(pid)
    except OSError:
        raise errors.ProcessNotFoundError("process %d not found" % pid)
    state = status.get("State", "")
    if state.startswith(("Z", "X")):
        raise errors.ProcessNotFoundError("process %d is a zombie (it has exited)" % pid)
    tracer = int(status.get("TracerPid", "0") or 0)
    if tracer:
        raise errors.NotAttachableError("process %d is already traced by pid %d (%s)" % (pid, tracer, comm(tracer)))
    return state.startswith("T")


def _new_doc(command, pid, patch_info):
    """A process result with every field the schema requires."""
    return {"pid": pid, "command": command, "result": "error", "code": errors.NsbError.exit_code, "message": "",
            "patch": dict(patch_info or {}), "target": {}, "functions": [], "timings": {}}


def run_one(command, pid, args, extra, patch_info=None):
    """Run one GDB session for one process; returns the per-process result dict."""
    session = GdbRun(command, pid, args, extra)
    session.start(gated=False)
    return session.finish(patch_info)


# Patches this runner decoded, by absolute path: (file identity before the read, LivePatch, whether
# the section's build-id was checked against the file's).  A gated GDB gets them with its "go" and
# skips importing protobuf and decoding (~15 ms of its latency, inside the stop for a revert).
DECODED: Dict[str, Tuple[Any, Any, bool]] = {}


def read_patch(path, check_identity=True):
    """LivePatch.read(path, check_identity) (PatchFileError as it), remembered for the gated GDB when
    the file did not change during the read."""
    from gdb_nsb.elf.livepatch import LivePatch
    path = os.path.abspath(path)
    try:
        before = file_identity(path)
    except OSError:
        before = None
    patch = LivePatch.read(path, check_identity=check_identity)
    try:
        if before is not None and file_identity(path) == before:
            DECODED[path] = (before, patch, check_identity)
    except OSError:
        pass  # gone meanwhile: GDB reads (and reports) it itself
    return patch


class GdbRun:
    """One `gdb -batch` session for one process: started, then finished into a result dict.

    Started *gated*, GDB boots, loads the extension and reads the files
    (everything before ``attach``) while the runner still validates the patch
    file; it then waits on a pipe and attaches only after :meth:`release`.
    :meth:`cancel`, or the runner dying, closes the pipe: GDB exits without
    ever touching the process.  (On 2 cores the two start-ups overlap: about
    100 ms of latency.)
    """

    def __init__(self, command, pid, args, extra):
        self.command, self.pid, self.args, self.extra = command, pid, args, extra
        self.started = time.monotonic()
        self.error = None          # an NsbError from the preflight, reported by finish()
        self.was_stopped = False
        self.proc = None
        self.result_file = None
        self.image = None          # process_image() before GDB came
        self._gate = None
        self.files = []            # the patch files GDB reads before attaching (absolute paths)

    def start(self, gated=False):
        args, pid = self.args, self.pid
        try:
            if pid is not None and not args.remote:
                self.was_stopped = preflight(pid)
                self.image = process_image(pid)
        except errors.NsbError as e:
            self.error = e
            return self
        fd, self.result_file = tempfile.mkstemp(prefix="nsb-result-", suffix=".json")
        os.close(fd)
        os.unlink(self.result_file)  # the extension creates it; absence means GDB failed
        # The extension's deadline counts from now, GDB's start-up and attach included.
        gdb_cmd = "nsb-%s --result-file %s --deadline-at %.6f" % (self.command, quote(self.result_file),
                                                                   time.monotonic() + args.timeout)
        for opt in self.extra:
            gdb_cmd += " " + opt
        argv = gdbrun.gdb_base_args(batch=True)
        pass_fds = ()
        if args.remote:
            if pid is not None:
                argv += ["-ex", "target extended-remote " + args.remote, "-ex", "attach %d" % pid]
            else:
                argv += ["-ex", "target remote " + args.remote]
        else:
            # Parse files and load the executable's symbols while the target still runs, then attach:
            # the target is stopped for less time (gdb_nsb/process/fastattach.py, bench/README.md).
            files = [p for p in [getattr(args, "patch", None)] if p and os.path.isfile(p)]
            self.files = [os.path.abspath(p) for p in files]
            gate = None
            if gated:
                read_end, self._gate = os.pipe()
                pass_fds, gate = (read_end,), read_end
            argv += ["-ex", "python import gdb_nsb.process.fastattach as _f; _f.prepare(%d, %r, gate=%r)"
                     % (pid, [os.path.abspath(p) for p in files], gate), "-ex", "attach %d" % pid]
        if args.verbose >= 3:
            argv += ["-ex", "set nsb debug on"]  # an internal error's traceback lands in gdb_stderr (-v)
        argv += ["-ex", gdb_cmd]
        if args.remote:
            # As in gdbrun.release_remote: at detach gdbserver hands each thread the SIGSTOP its own stop
            # left as the thread's last signal, and the process group-stops.  Seen after a busy look
            # (exit 3 before any write): all threads T in 4 of 8 tries, 0 of 6 with this.
            argv += ["-ex", "handle SIGSTOP nostop noprint nopass"]
        argv += ["-ex", "detach",
                 "-ex", "python import gdb_nsb.process.fastattach as _f; _f.exit_if_detached()"]
        if args.verbose >= 3:
            print("nsb: running %s" % " ".join(argv), file=sys.stderr)
        timeline.mark("gdb_spawn")
        try:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, text=True, start_new_session=True,
                                         pass_fds=pass_fds)
            gdbrun.raise_gdb(self.proc.pid, args)
        finally:
            for fd in pass_fds:
                os.close(fd)
        return self

    def release(self):
        """Let a gated GDB attach, handing it the patches this runner decoded (fastattach)."""
        if self._gate is not None:
            handoff = {p: DECODED[p] for p in self.files if p in DECODED}
            try:
                os.write(self._gate, b"go" + (pickle.dumps(handoff) if handoff else b""))
            except OSError:
                pass  # GDB is gone already: finish() reports it
            os.close(self._gate)
            self._gate = None

    def cancel(self):
        """A gated GDB exits without attaching; waits for it and cleans up."""
        if self._gate is not None:
            os.close(self._gate)
            self._gate = None
        if self.proc is not None:
            try:
                self.proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.communicate()
        if self.result_file and os.path.exists(self.result_file):
            os.unlink(self.result_file)

    def finish(self, patch_info=None):
        """Wait for GDB; the per-process result dict."""
        self.release()
        args, pid, proc = self.args, self.pid, self.proc
        doc = _new_doc(self.command, pid, patch_info)
        if self.error is not None:
            e = self.error
            doc.update(code=e.exit_code, message=str(e), error=type(e).__name__)
            doc["timings"]["total_s"] = round(time.monotonic() - self.started, 4)
            return doc
        grace = grace_seconds()
        result_file, was_stopped = self.result_file, self.was_stopped
        try:
            killed = False
            try:
                out, err = proc.communicate(timeout=args.timeout + grace)
                timeline.mark("gdb_exited")
            except subprocess.TimeoutExpired:
                killed = True
                os.killpg(proc.pid, signal.SIGKILL)
                out, err = proc.communicate()
            except BaseException:
                # Interrupted (^C): GDB is in its own session and finishes (or rolls back) on
                # its own deadline; wait for it so that the target is never left stopped.
                try:
                    proc.wait(timeout=args.timeout + grace)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                if pid is not None and not args.remote:
                    ensure_running(pid, was_stopped)
                elif args.remote and proc.returncode is not None and proc.returncode < 0:
                    gdbrun.release_remote(args.remote, pid)
                raise
            # A GDB that died (or that we killed) never ran its detach: gdbserver still holds the
            # process stopped, with our last register restore only in its cache.
            release_note = None
            if args.remote and (killed or proc.returncode < 0):
                why = gdbrun.release_remote(args.remote, pid)
                release_note = ("the process was released from gdbserver at %s (a fresh GDB detached it)"
                                % args.remote if why is None else
                                "the process may still be stopped under gdbserver: %s" % why)
            settle(doc, pid, args, self.started, result_file, killed,
                   not killed and proc.returncode == 0 and os.path.exists(result_file), out, err, was_stopped,
                   self.image, release_note)
        finally:
            if os.path.exists(result_file):
                os.unlink(result_file)
        return doc


def settle(doc, pid, args, started, result_file, killed, clean, out, err, was_stopped, image, release_note=None):
    """Fill ``doc`` once GDB is done with process ``pid`` (the session ended, or moved on to the next
    process): the process left running, then its result, or why there is none (attach failure in ``err``,
    GDB killed, the process exited or executed, GDB failed).  ``clean``: GDB detached and wrote a result."""
    states = {}
    if pid is not None and not args.remote:
        states = ensure_running(pid, was_stopped, clean_exit=clean)
    doc["timings"]["total_s"] = round(time.monotonic() - started, 4)
    attach_failure = _attach_failure(err) if pid is not None else None
    if attach_failure is not None:
        code, message = attach_failure
        doc.update(code=code, message="process %d: %s" % (pid, message), error="AttachFailed")
    elif os.path.exists(result_file):
        with open(result_file) as f:
            inner = json.load(f)
        timings = inner.pop("timings", {}) or {}
        doc.update(inner)
        doc["timings"] = dict(timings, total_s=round(time.monotonic() - started, 4))
    elif killed:
        doc.update(code=errors.TimeoutExpired.exit_code,
                   message="GDB did not finish within --timeout %g s + %g s grace: it was killed and the "
                           "process left running; its patch state is unknown (see `nsb check`)"
                           % (args.timeout, grace_seconds()),
                   error="TimeoutExpired")
    else:
        vanished = _vanished_during(pid, image) if pid is not None and not args.remote else None
        if vanished is not None:
            # GDB 13 can die of an internal error when the process exits or execs under it
            # (threads vanishing mid-window); what the process did is the cause to report.
            cls, what = vanished
            doc.update(code=cls.exit_code, error=cls.__name__,
                       message="process %d %s during the operation and GDB failed on it (%s); "
                               "operation aborted, nothing written%s"
                               % (pid, what, _gdb_failure_message(err, bare=True),
                                  " to the new program" if cls is errors.TargetExecError else ""))
        else:
            doc.update(code=errors.NsbError.exit_code, message=_gdb_failure_message(err), error="GdbFailure")
    if release_note is not None:
        doc["message"] = "%s; %s" % (doc.get("message") or "GDB died", release_note)
    if doc["code"] != 0:
        doc["result"] = "error"
    if states and any(s in "Tt" for s in states.values()) and not was_stopped:
        doc["warning"] = "process %d is still stopped after GDB left (thread states %s)" % (
            pid, "".join(sorted(states.values())))
    if args.verbose >= 2:
        doc["gdb_output"] = out
    if args.verbose >= 1 and err.strip():
        doc["gdb_stderr"] = err
    return doc


def _attach_failure(err):
    """(exit code, reason) when GDB could not attach, from its stderr; None when it attached."""
    lines = [l.strip() for l in (err or "").splitlines()]
    if "ptrace: Operation not permitted." in lines:
        traced = next((l for l in lines if "is already traced by process" in l), None)
        if traced:
            return errors.NotAttachableError.exit_code, traced.replace("warning: ", "")
        reason = "ptrace: Operation not permitted"
        try:
            with open("/proc/sys/kernel/yama/ptrace_scope") as f:
                scope = f.read().strip()
            if scope != "0":
                reason += " (kernel.yama.ptrace_scope is %s)" % scope
        except OSError:
            pass
        return errors.NotAttachableError.exit_code, "GDB could not attach: " + reason
    if "ptrace: No such process." in lines:
        return errors.ProcessNotFoundError.exit_code, "not found (it exited)"
    return None


def process_image(pid):
    """What identifies the program a process runs now: its executable's identity and where its stack
    and vDSO are (an exec gives new ones under ASLR).  None when unreadable."""
    try:
        st = os.stat("/proc/%d/exe" % pid)
        with open("/proc/%d/maps" % pid) as f:
            special = tuple(line.split()[0] for line in f if line.rstrip().endswith(("[stack]", "[vdso]")))
    except OSError:
        return None
    return (st.st_dev, st.st_ino, special)


def _vanished_during(pid, before):
    """(error class, what happened) when the process exited or executed a new program since ``before``."""
    try:
        state = _status(pid).get("State", "")
    except OSError:
        return errors.TargetExitedError, "exited"
    if state.startswith(("Z", "X")):
        return errors.TargetExitedError, "exited"
    now = process_image(pid)
    if before is not None and now is not None and now != before:
        return errors.TargetExecError, "executed a new program"
    return None


def _gdb_failure_message(err, bare=False):
    # GDB's fatal messages may carry NUL bytes ("Recursive internal problem.\n\0").
    lines = [l.replace("\0", "").strip() for l in (err or "").splitlines()]
    lines = [l for l in lines if l and "warning:" not in l]
    # nsb-gdb.py could not load the extension: its one line says why, whatever GDB said after it.
    lines = [l for l in lines if l.startswith("gdb-nsb not loaded:")][:1] or lines
    if bare:
        return lines[-1] if lines else "no message"
    if lines:
        return "GDB failed without a result: %s" % lines[-1]
    return "GDB failed without a result"


def _run_all(command, targets, args, extra, patch_info):
    if len(targets) == 1:
        return [run_one(command, targets[0], args, extra, patch_info)]
    # Several processes: a GDB per core for as long as the whole set takes must not hold the CPUs at
    # real-time priority (other programs would keep 5% of them): back to normal before any starts.
    gdbrun.set_policy("normal")
    if not args.remote and os.environ.get("NSB_SESSION_PER_PROCESS") != "1":
        # Local processes: a few GDB sessions serve them all, one process after the other (many.py).
        import sys

        from gdb_nsb.standalone import many
        return many.run_many(command, targets, args, extra, patch_info, sys.modules[__name__])
    # Independent GDB sessions, a few at a time; results keep the -p order.
    shown = progress.Progress(len(targets), show=progress.wanted(args.json))
    docs = [None] * len(targets)
    next_index = [0]
    lock = threading.Lock()

    def work():
        while True:
            with lock:
                i = next_index[0]
                next_index[0] += 1
            if i >= len(targets):
                return
            try:
                docs[i] = progress.timed(shown, targets[i],
                                         lambda i=i: run_one(command, targets[i], args, extra, patch_info),
                                         ok=lambda d: d["code"] in ((0, 2, 3) if command == "check" else (0,)))
            except Exception as e:  # never lose the other processes' results
                docs[i] = _new_doc(command, targets[i], patch_info)
                docs[i].update(message="internal error: %s: %s" % (type(e).__name__, e), error="InternalError")

    workers = [threading.Thread(target=work) for _ in range(min(4, len(targets)))]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    shown.close()
    return docs


def run(command, args, prepare):
    """Run ``command`` for every process of ``args``; print the outcome; return the exit code.

    ``prepare(args)`` checks the command's own arguments and returns (extra
    nsb-* arguments, a function that reads and checks the patch file and
    returns its description, or None).  That function runs before any
    process is touched; with one local process GDB boots meanwhile, gated.
    """
    gdbrun.set_priority(getattr(args, "nice", None))  # the policy (--sched) is set by cli.main, first thing
    try:
        pids = parse_pids(args.pid)
        all_of = getattr(args, "all_of", False)
        if not pids and not args.remote and not all_of:
            raise errors.UsageError("give a process with -p PID%s (or --remote HOST:PORT)"
                                    % (" or --all-of" if hasattr(args, "all_of") else ""))
        if all_of and args.remote:
            raise errors.UsageError("--all-of finds local processes; it does not go with --remote")
        extra, load_info = prepare(args)
        early = None
        if len(pids) == 1 and not args.remote and not all_of:
            # One local process: GDB starts now and waits before attaching while the patch is read.
            early = GdbRun(command, pids[0], args, extra).start(gated=True)
        try:
            patch_info = load_info() if load_info is not None else None
            timeline.mark("patch_read")
        except BaseException:
            if early is not None:
                early.cancel()
            raise
        if early is not None:
            docs = [early.finish(patch_info)]
            return _report(command, args, docs)
        if all_of:
            from gdb_nsb.standalone.discover import all_of_processes
            found, none_found = all_of_processes(command, patch_info, args)
            pids += [p for p in found if p not in pids]
            if not pids:
                raise errors.ProcessNotFoundError(none_found)
    except errors.NsbError as e:
        if not args.json:
            raise
        print_json(command, e.exit_code, [], message=str(e))
        return e.exit_code
    docs = _run_all(command, pids or [None], args, extra, patch_info)
    return _report(command, args, docs)


def _report(command, args, docs):
    timeline.mark("runner_done")
    code = next((d["code"] for d in docs if d["code"] != 0), 0)
    if args.json:
        print_json(command, code, docs)
    else:
        for d in docs:
            print_human(d, len(docs) > 1, args.verbose)
    return code


def print_json(command, code, docs, message=None):
    """The one JSON document of --json (gdb_nsb/data/result.schema.json)."""
    if code == 0:
        result = "ok"
    elif docs and any(d["code"] == 0 for d in docs):
        result = "mixed"
    else:
        result = "error"
    doc = {"command": command, "result": result, "exit_code": code, "processes": docs}
    if message is not None:
        doc["message"] = message
    print(json.dumps(doc, indent=2, sort_keys=True))


def print_human(doc, several, verbose):
    prefix = ("pid %s: " % doc["pid"]) if several else ""
    stream = sys.stdout if doc["code"] in (0, 2) else sys.stderr
    for line in doc.get("lines", []):
        print(prefix + line, file=sys.stdout)
    if doc.get("message") and doc["message"] not in doc.get("lines", []):
        print(prefix + ("nsb: " if stream is sys.stderr else "") + doc["message"], file=stream)
    if doc.get("warning"):
        print(prefix + "nsb: warning: " + doc["warning"], file=sys.stderr)
    if verbose >= 1 and doc.get("gdb_stderr"):
        print(doc["gdb_stderr"], file=sys.stderr)
    if verbose >= 2 and doc.get("gdb_output"):
        print(doc["gdb_output"], file=sys.stderr)


quote = options.gdb_quote
