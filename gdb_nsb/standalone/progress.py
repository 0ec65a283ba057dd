"""Progress of work on many processes, for a person at a terminal.

One line on stderr, rewritten in place: processes done of all, failures so
far, the slowest one yet.  Only when stdout and stderr are both terminals
and the output is not --json: a script reading stdout, a log file, or a
JSON consumer sees nothing of it.
"""

import sys
import threading
import time


def wanted(json_output, stdout=None, stderr=None):
    """Whether progress is shown: a person watches both streams, and stdout is not JSON."""
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    try:
        return not json_output and stdout.isatty() and stderr.isatty()
    except (AttributeError, ValueError):
        return False


class Progress:
    """Counts finished processes; ``show`` decides whether anything is written."""

    def __init__(self, total, what="processes", show=False, stream=None, min_total=2):
        self.total, self.what = total, what
        self.show = show and total >= min_total
        self.stream = stream or sys.stderr
        self.done = 0
        self.failed = 0
        self.slowest = None  # (seconds, pid)
        self._lock = threading.Lock()
        self._width = 0

    def line(self):
        text = "nsb: %d/%d %s done, %d failed" % (self.done, self.total, self.what, self.failed)
        if self.slowest is not None:
            text += ", slowest pid %s (%.1f s)" % (self.slowest[1], self.slowest[0])
        return text

    def finished(self, pid, seconds, ok):
        """One process is done (``ok``: it succeeded), after ``seconds``."""
        with self._lock:
            self.done += 1
            if not ok:
                self.failed += 1
            if self.slowest is None or seconds > self.slowest[0]:
                self.slowest = (seconds, pid)
            if self.show:
                text = self.line()
                self.stream.write("\r" + text.ljust(self._width))
                self.stream.flush()
                self._width = len(text)

    def close(self):
        """Clear the progress line (the results follow on stdout)."""
        if self.show and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0


def timed(progress, pid, work, ok=lambda result: True):
    """Run ``work()`` and count it in ``progress``; its result."""
    t0 = time.monotonic()
    result = None
    try:
        result = work()
        return result
    finally:
        progress.finished(pid, time.monotonic() - t0, result is not None and ok(result))
