"""`check` of a patch series judges what `patch` with the same options would do (issue 18, item 1).

The series target with ``p1park`` applied (``p1`` that also changes ``park``), and a thread parked
inside ``p1park``'s ``park``: code only that patch has.  Stacking a patch over it leaves ``park``
alone, but a replace (the cumulative ``p3``, or ``--replace``) takes ``p1park`` out, so it must wait
for that thread.  ``check`` once judged every patch as stacked and answered "applicable" (2) where
the replace is busy (3); now check and patch agree, and check's ``--json`` plan is that of
``patch --dry-run``.  The GDB command takes ``--replace`` too.
"""

import pytest

import targets as T
from gdb_nsb.elf.livepatch import build_id_of
from targets.series import VALUE, Running, build_flavor, patch_for

pytestmark = [pytest.mark.gdb, pytest.mark.timeout(400)]
SECONDS = 60
LOOKS = ["--retries", "3"]  # the parked thread never leaves: a few looks tell busy as well as 25


def nsb(*args):
    run = T.nsb(*(list(args) + ["--json"]), timeout=SECONDS + 60)
    return run.returncode, T.only_process(run.doc)


def check(t, p, *extra):
    return nsb("check", "-p", t.pid, "-f", p, "--timeout", SECONDS, *LOOKS, *extra)


def patch(t, p, *extra):
    return nsb("patch", "-p", t.pid, "-f", p, "--timeout", SECONDS, *LOOKS, *extra)


def test_check_of_a_replace_is_busy_where_a_stacked_apply_is_not_and_patch_agrees():
    f = build_flavor("pie")
    p1, p1park, p3 = (patch_for(f, n) for n in ("p1", "p1park", "p3"))
    bpark, b3 = build_id_of(p1park), build_id_of(p3)
    parked_in = "inside park of patch %s" % bpark[:12]
    with Running(f) as t:
        t.allow(VALUE["p1"])
        code, doc = patch(t, p1park)
        assert code == 0 and t.value() == VALUE["p1"], doc
        t.park()  # a thread enters p1park's park() and stays there

        # (a) The cumulative p3: a replace that must wait for the parked thread; patch agrees.
        code, doc = check(t, p3)
        assert code == 3 and doc["state"] == "not applied", doc
        assert parked_in in doc["message"] and "busy at each of 3 looks" in doc["message"], doc["message"]
        plan = doc["plan"]
        assert plan["kind"] == "replace" and plan["replaces"] == [bpark], plan
        assert sorted(plan["functions"]) == ["gen_a", "gen_c"] and sorted(plan["restores"]) == ["gen_b", "park"], plan
        assert "an apply replaces patch %s in the same stop" % bpark[:16] in doc["lines"], doc["lines"]
        code, doc = patch(t, p3)
        assert code == 3 and parked_in in doc["message"], doc
        assert t.value() == VALUE["p1"] and list(_listing(t)) == [bpark]  # nothing changed
        code, dry = patch(t, p3, "--dry-run")
        assert code == 0 and dry["plan"] == check(t, p3)[1]["plan"], dry  # dry run: no safe point asked

        # (c) A patch that is not cumulative: stacked, park is not its business; with --replace, busy.
        code, doc = check(t, p1)
        assert code == 2 and doc["plan"]["kind"] == "stack" and doc["plan"]["replaces"] == [], doc
        code, doc = check(t, p1, "--replace")
        assert code == 3 and parked_in in doc["message"], doc
        assert doc["plan"]["kind"] == "replace" and doc["plan"]["replaces"] == [bpark], doc["plan"]
        assert doc["plan"]["restores"] == ["park"], doc["plan"]
        # The GDB command: the same verdicts.
        g = T.run_gdb(t.pid, ["nsb-check --retries 3 --replace %s" % p1, "nsb-check --retries 3 %s" % p1],
                      timeout=SECONDS)
        out = g.stdout + g.stderr
        assert parked_in in out and "an apply replaces patch %s" % bpark[:16] in out, out
        assert "it could be applied now" in out, out  # the second, stacked
        assert t.unpark() == 2  # the thread ran p1park's park all along
        assert T.wait_running(t.pid, 10), T.thread_states(t.pid)

        # (b) Quiet: applicable (2, not applied), the plan that of patch --dry-run; then the apply does it.
        code, doc = check(t, p3)
        assert code == 2 and doc["state"] == "not applied" and "could be applied now" in doc["message"], doc
        code, dry = patch(t, p3, "--dry-run")
        assert code == 0 and dry["plan"] == doc["plan"] and dry["plan"]["replaces"] == [bpark], (dry, doc)
        t.allow(VALUE["p1"], VALUE["p3"])
        code, done = patch(t, p3)
        assert code == 0 and [x["build_id"] for x in done["replaced"]] == [bpark], done
        assert t.value() == VALUE["p3"] and list(_listing(t)) == [b3]
        assert t.wait_calls()["mixed"] == 0
        code, doc = check(t, p3)
        assert code == 0 and doc["state"] == "applied" and "plan" not in doc, doc


def _listing(t):
    code, doc = nsb("list", "-p", t.pid)
    assert code == 0, doc
    return {p["build_id"]: p for p in doc["patches"]}
