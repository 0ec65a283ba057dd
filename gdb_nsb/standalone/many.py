"""Many local processes, few GDB sessions (issue 15 item 3): the runner's side.

The processes are split into one contiguous share per core; each share is
served by one GDB session at a time (``gdb_nsb/process/many.py`` inside GDB),
which attaches, operates and detaches one process after the other.  The
session journals ``start PID`` / ``done PID``; each process's result is read
as soon as its ``done`` line comes (journaled as it completes), and settled
exactly as a session of its own would be (``runner.settle``: same codes, same
messages).  A process whose ``done`` does not come by its own deadline
(``--timeout`` from its start + the grace) gets its session killed and is
reported as a timeout (15); a session that dies (crash, internal error) costs
the process it was on; the rest of the share continues in a fresh session.
"""

import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time

from gdb_nsb import errors
from gdb_nsb.standalone import gdbrun, progress

POLL_S = 0.005


class _Job:
    def __init__(self, pid, workdir):
        self.pid = pid
        self.result_file = os.path.join(workdir, "result-%d.json" % pid)
        self.was_stopped = False
        self.image = None
        self.error = None
        self.started = None


def sessions_for(count):
    """How many sessions serve ``count`` processes side by side: one per core the runner may run on
    (``taskset``, a container's cpuset), at most one per process."""
    return max(1, min(count, len(os.sched_getaffinity(0))))


def run_many(command, pids, args, extra, patch_info, runner):
    """Docs for ``pids`` in their order; ``runner`` is gdb_nsb.standalone.runner (settle, preflight, ...)."""
    shown = progress.Progress(len(pids), show=progress.wanted(args.json))
    docs = [None] * len(pids)
    workdir = tempfile.mkdtemp(prefix="nsb-many-")
    try:
        jobs = [_Job(pid, workdir) for pid in pids]
        for job in jobs:
            try:
                job.was_stopped = runner.preflight(job.pid)
                job.image = runner.process_image(job.pid)
            except errors.NsbError as e:
                job.error = e
        n = sessions_for(len(jobs))
        size = -(-len(jobs) // n)
        shares = [list(range(i, min(i + size, len(jobs)))) for i in range(0, len(jobs), size)]
        lock = threading.Lock()

        def serve(share, k):
            try:
                _serve(command, [jobs[i] for i in share], args, extra, patch_info, runner, workdir, k,
                       lambda job, doc: _record(docs, pids, jobs, job, doc, shown, command, lock))
            except Exception as e:  # never lose the other processes' results
                for i in share:
                    if docs[i] is None:
                        doc = runner._new_doc(command, pids[i], patch_info)
                        doc.update(message="internal error: %s: %s" % (type(e).__name__, e), error="InternalError")
                        docs[i] = doc

        threads = [threading.Thread(target=serve, args=(share, k)) for k, share in enumerate(shares)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        shown.close()
    return docs


def _record(docs, pids, jobs, job, doc, shown, command, lock):
    with lock:
        docs[jobs.index(job)] = doc
        ok = doc["code"] in ((0, 2, 3) if command == "check" else (0,))
        shown.finished(job.pid, doc["timings"].get("total_s", 0), ok)


def _serve(command, share, args, extra, patch_info, runner, workdir, k, record):
    """Run ``share`` through as many sessions as it takes."""
    pending = []
    for job in share:
        if job.error is not None:
            doc = runner._new_doc(command, job.pid, patch_info)
            e = job.error
            doc.update(code=e.exit_code, message=str(e), error=type(e).__name__)
            record(job, doc)
        else:
            pending.append(job)
    attempt = 0
    while pending:
        attempt += 1
        pending = _session(command, pending, args, extra, patch_info, runner, workdir, "%d-%d" % (k, attempt),
                           record)


def _session(command, jobs, args, extra, patch_info, runner, workdir, tag, record):
    """One GDB session over ``jobs``; returns the jobs it did not reach."""
    journal = os.path.join(workdir, "journal-%s" % tag)
    spec_path = os.path.join(workdir, "spec-%s.json" % tag)
    patches = [os.path.abspath(p) for p in [getattr(args, "patch", None)] if p and os.path.isfile(p)]
    with open(spec_path, "w") as f:
        json.dump({"command": command, "extra": " ".join(extra), "timeout": args.timeout, "journal": journal,
                   "patches": patches, "verbose": args.verbose >= 2,
                   "jobs": [{"pid": j.pid, "result_file": j.result_file} for j in jobs]}, f)
    argv = gdbrun.gdb_base_args(batch=True) + [
        "-ex", "python import gdb_nsb.process.many as _m; _m.run(%r)" % spec_path]
    out_f = tempfile.TemporaryFile(mode="w+", dir=workdir)
    err_f = tempfile.TemporaryFile(mode="w+", dir=workdir)
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out_f, stderr=err_f, text=True,
                            start_new_session=True)
    gdbrun.raise_gdb(proc.pid, args)
    grace = runner.grace_seconds()
    by_pid = {j.pid: j for j in jobs}
    done, current, seen = [], None, 0
    killed = False
    try:
        while True:
            lines = _read_journal(journal)
            for word, pid in lines[seen:]:
                job = by_pid[pid]
                if word == "start":
                    job.started, current = time.monotonic(), job
                else:
                    err = _attach_error(job)
                    doc = runner._new_doc(command, job.pid, patch_info)
                    runner.settle(doc, job.pid, args, job.started, job.result_file, False,
                                  err is None and os.path.exists(job.result_file), "", err or "", job.was_stopped,
                                  job.image)
                    record(job, doc)
                    done.append(job)
                    current = None
            seen = len(lines)
            if proc.poll() is not None:
                break
            if current is not None and time.monotonic() > current.started + args.timeout + grace:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                killed = True
                break
            time.sleep(POLL_S)
    except BaseException:
        # Interrupted: the session finishes (or rolls back) on its own deadlines; never leave it behind.
        try:
            proc.wait(timeout=args.timeout + grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        raise
    err_f.seek(0)
    err = err_f.read()
    out_f.seek(0)
    out = out_f.read()
    if current is not None:
        # The session ended (or was killed) on this process: it alone pays.
        doc = runner._new_doc(command, current.pid, patch_info)
        runner.settle(doc, current.pid, args, current.started, current.result_file, killed, False, out, err,
                      current.was_stopped, current.image)
        record(current, doc)
        done.append(current)
    elif proc.returncode != 0 and not done:
        # Died before its first process: report that one rather than start sessions forever.
        first = jobs[0]
        first.started = first.started or time.monotonic()
        doc = runner._new_doc(command, first.pid, patch_info)
        runner.settle(doc, first.pid, args, first.started, first.result_file, False, False, out, err,
                      first.was_stopped, first.image)
        record(first, doc)
        done.append(first)
    return [j for j in jobs if j not in done]


def _attach_error(job):
    path = job.result_file + ".attach"
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _read_journal(path):
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return []
    out = []
    for line in text.splitlines(keepends=True):
        if not line.endswith("\n"):
            break  # a line being written
        word, pid = line.split()
        out.append((word, int(pid)))
    return out
