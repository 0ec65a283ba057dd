"""Threads during apply and revert: one blocked in read(), one parked inside a replaced function (issue 4)."""

import pytest

from targets import maps, memory_matches_file, nsb
from targets.engine import Running, build_flavor, patch_for

pytestmark = [pytest.mark.gdb, pytest.mark.timeout(300)]


def test_blocked_read_gets_its_data_after_apply_and_revert(tmp_path):
    """The reader sits in read() (called from wait_input/reader_loop, never replaced) through both steps."""
    f = build_flavor("pie")
    patch = patch_for(f, "plus100")
    with Running(f, tmp_path) as t:
        assert t.ask("got?") == "got 0 -"
        run = nsb("patch", "-p", t.pid, "-f", patch, "--json", "--timeout", 90)
        rc, doc = run.returncode, run.process
        assert rc == 0, doc
        t.feed("after-apply")
        assert t.ask("got?") in ("got 1 after-apply",) or _wait_got(t, "got 1 after-apply")
        run = nsb("revert", "-p", t.pid, "-f", patch, "--json", "--timeout", 90)
        rc, doc = run.returncode, run.process
        assert rc == 0, doc
        t.feed("after-revert")
        assert _wait_got(t, "got 2 after-revert")
        assert t.value() == t.expect(0)
        assert t.alive() and t.stats()["unexpected"] == 0


def _wait_got(t, want, tries=100):
    import time
    for _ in range(tries):
        if t.ask("got?") == want:
            return True
        time.sleep(0.02)
    raise AssertionError("reader answered %r, expected %r" % (t.ask("got?"), want))


def test_thread_parked_in_replaced_function_is_busy_then_succeeds(tmp_path):
    f = build_flavor("pie")
    patch = patch_for(f, "parked")
    with Running(f, tmp_path) as t:
        assert t.ask("park") == "parked"
        maps0 = maps(t.pid)
        mem0, want = memory_matches_file(t.pid, f.target, "parked")
        assert mem0 == want
        run = nsb("patch", "-p", t.pid, "-f", patch, "--retries", "3", "--json", "--timeout", 90)
        rc, doc = run.returncode, run.process
        assert rc == 3, doc
        msg = doc["message"]
        assert "parked" in msg and "thread" in msg and "frame" in msg, msg
        # Untouched: same mappings (no registry, no patch mapping), same bytes.
        assert maps(t.pid) == maps0
        assert memory_matches_file(t.pid, f.target, "parked")[0] == want
        # Once the thread has left, the same apply succeeds.
        assert t.ask("unpark") == "unparked %d" % t.expect(0)
        run = nsb("patch", "-p", t.pid, "-f", patch, "--retries", "3", "--json", "--timeout", 90)
        rc, doc = run.returncode, run.process
        assert rc == 0, doc
        # Now the thread parks in the patch's copy: revert is busy the same way, then succeeds.
        assert t.ask("park") == "parked"
        run = nsb("revert", "-p", t.pid, "-f", patch, "--retries", "3", "--json", "--timeout", 90)
        rc, doc = run.returncode, run.process
        assert rc == 3, doc
        assert "thread" in doc["message"], doc
        jumped = memory_matches_file(t.pid, f.target, "parked")[0]
        assert jumped != want  # still redirected
        assert t.ask("unpark") == "unparked %d" % t.expect(100)
        run = nsb("revert", "-p", t.pid, "-f", patch, "--retries", "3", "--json", "--timeout", 90)
        rc, doc = run.returncode, run.process
        assert rc == 0, doc
        assert memory_matches_file(t.pid, f.target, "parked")[0] == want
        assert t.ask("park") == "parked"
        assert t.ask("unpark") == "unparked %d" % t.expect(0)
        assert t.stats()["unexpected"] == 0
