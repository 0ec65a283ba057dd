"""Breakpoints and debuggability around a live patch; a fresh GDB session meeting a patched process (issue 4).

Each test drives whole GDB sessions (tests/targets, run_gdb) on a running
target whose worker threads keep calling compute().
"""

import os

import pytest

from targets import maps, memory_matches_file, nsb, run_gdb, wait_running
from targets.engine import Running, build_flavor, patch_for

pytestmark = [pytest.mark.gdb, pytest.mark.timeout(300)]

PRELUDE = '''
import gdb, json
def result(**kw):
    print("NSB-RESULT: " + json.dumps(kw))
def attempt(command):
    try:
        gdb.execute(command, to_string=True)
        return "ok"
    except gdb.error as e:
        return "error: %s" % e
def objfile_at(addr):
    text = gdb.execute("info symbol %#x" % addr, to_string=True)
    return text.strip()
'''


def test_break_before_and_after_patching_O0(tmp_path):
    f = build_flavor("O0")
    patch = patch_for(f, "plus100")
    with Running(f, tmp_path) as t:
        maps0 = maps(t.pid)
        r = run_gdb(t.pid, timeout=120, python=PRELUDE + '''
inf = gdb.selected_inferior()
entry = int(gdb.parse_and_eval("(long)&compute"))
b = gdb.Breakpoint("compute")
loc = b.locations[0].address
original = bytes(inf.read_memory(entry, 5))
refused = attempt("nsb-patch %(patch)s")
untouched = bytes(inf.read_memory(entry, 5)) == original
applied = attempt("nsb-patch --breakpoints disable %(patch)s")
result(entry=entry, loc=loc, refused=refused, untouched=untouched, applied=applied, b1_enabled=b.enabled,
       b1_locations=[(l.address, l.enabled) for l in b.locations])

# `break compute` after patching: only the patch's copy keeps an enabled location.
b2 = gdb.Breakpoint("compute")
enabled = [l.address for l in b2.locations if l.enabled]
where = [objfile_at(a) for a in enabled]
gdb.execute("continue")
pc = int(gdb.parse_and_eval("$pc"))
frames = []
fr = gdb.newest_frame()
while fr is not None and len(frames) < 4:
    frames.append(fr.name())
    fr = fr.older()
dis = gdb.execute("disassemble", to_string=True)
result(enabled=enabled, where=where, pc=pc, frames=frames, hit=pc in enabled,
       info_symbol=objfile_at(pc), dis="=>" in dis and "compute" in dis.splitlines()[0])
b2.delete()
b.delete()  # still enabled, live in the patch's copy: it would stop the revert's run windows
reverted = attempt("nsb-revert %(patch)s")

# The setting does what the option does (on a breakpoint inside the jump's bytes again).
b3 = gdb.Breakpoint("*%%d" %% (entry + 4))
gdb.execute("set nsb breakpoints disable")
setting = attempt("nsb-patch %(patch)s")
result(reverted=reverted, setting=setting, b3_after_setting=b3.enabled, b3_location=b3.locations[0].enabled)
b3.delete()
result(final=attempt("nsb-revert %(patch)s"))
''' % {"patch": patch})
        assert len(r.results) == 4, r
        first, second, third, final = r.results
        assert first["entry"] <= first["loc"] < first["entry"] + 5, first
        assert first["refused"].startswith("error:") and "breakpoint" in first["refused"] \
            and "compute" in first["refused"], first
        assert first["untouched"], first
        # Only the location inside the jump is disabled, never the user's whole breakpoint.
        assert first["applied"] == "ok" and first["b1_enabled"] is True, (first, r)
        # Its location in the old body is disabled; GDB re-set it on the patch's symbols: that copy is live.
        old_body = [en for a, en in first["b1_locations"] if first["entry"] <= a < first["entry"] + 5]
        assert old_body and not any(old_body), (first, r)
        assert any(en for a, en in first["b1_locations"] if a not in range(first["entry"], first["entry"] + 5)), \
            (first, r)
        assert second["enabled"] and all("plus100-O0.so" in w for w in second["where"]), (second, r)
        assert second["hit"], (second, r)
        assert second["frames"][:2] == ["compute", "worker"], second
        assert "compute" in second["info_symbol"] and "plus100-O0.so" in second["info_symbol"], second
        assert second["dis"], second
        assert third["reverted"] == "ok", (third, r)
        assert third["setting"] == "ok" and third["b3_after_setting"] is True and third["b3_location"] is False, \
            (third, r)
        assert final["final"] == "ok", (final, r)
        assert wait_running(t.pid)
        assert t.value() == t.expect(0)
        mem, want = memory_matches_file(t.pid, f.target, "compute")
        assert mem == want
        assert t.stats()["unexpected"] == 0
        assert len(maps(t.pid)) > len(maps0)  # the inactive patch stays mapped


def test_fresh_session_lists_checks_reverts(tmp_path):
    f = build_flavor("pie")
    patch = patch_for(f, "plus100")
    with Running(f, tmp_path) as t:
        run = nsb("patch", "-p", t.pid, "-f", patch, "--json", "--timeout", 90)
        rc, doc = run.returncode, run.process
        assert rc == 0, doc
        bid = doc["patch"]["build_id"]
        dest = doc["functions"][0]["destination"]
        assert t.value() == t.expect(100)
        # Another GDB session, which has never seen the patch file: it finds everything by build-id.
        r = run_gdb(t.pid, timeout=120, python=PRELUDE + '''
listing = gdb.execute("nsb-list", to_string=True)
after = objfile_at(%(dest)d)
check = gdb.execute("nsb-check %(patch)s", to_string=True)
revert = attempt("nsb-revert %(bid)s")
listing2 = gdb.execute("nsb-list", to_string=True)
result(listing=listing, after=after, check=check, revert=revert, listing2=listing2)
''' % {"dest": dest, "patch": patch, "bid": bid[:12]})
        assert len(r.results) == 1, r
        out = r.results[0]
        assert bid in out["listing"] and "active" in out["listing"] and "compute" in out["listing"], out
        assert "layer 1 of 1" in out["listing"], out
        assert out["after"].startswith("compute in section .text of") and "plus100-pie.so" in out["after"], out
        assert "is applied" in out["check"], out
        assert out["revert"] == "ok", (out, r)
        assert "inactive" in out["listing2"], out
        assert wait_running(t.pid)
        assert t.value() == t.expect(0)
        mem, want = memory_matches_file(t.pid, f.target, "compute")
        assert mem == want
        # A third session (the runner) sees it reverted: check says not applied but applicable (2).
        run = nsb("check", "-p", t.pid, "-f", patch, "--json", "--timeout", 90)
        rc, doc = run.returncode, run.process
        assert rc == 2, doc
        assert t.stats()["unexpected"] == 0


def test_plain_attach_to_a_patched_process_knows_patch_symbols(tmp_path):
    """A session that runs no nsb-* command still gets the patch's symbols at attach (REFERENCE 2.7)."""
    f = build_flavor("pie")
    patch = patch_for(f, "plus100")
    with Running(f, tmp_path) as t:
        run = nsb("patch", "-p", t.pid, "-f", patch, "--json", "--timeout", 90)
        code, doc = run.returncode, run.process
        assert code == 0, doc
        r = run_gdb(t.pid, timeout=120, python=PRELUDE + '''
entry = int(gdb.parse_and_eval("(long)&compute"))
insn = gdb.execute("x/i %#x" % entry, to_string=True)
dest = int(insn.split("jmp")[1].split()[0], 16)
result(where=objfile_at(dest))
''')
        assert r.results and "plus100" in r.results[0]["where"] and "compute" in r.results[0]["where"], r
        assert wait_running(t.pid)


def test_exec_detection_refuses_when_the_memory_map_cannot_be_read(tmp_path):
    # Exec detection around the safe-point loop compares the first mapping before and after; a map
    # that cannot be read used to turn it off silently (None == None).  Now the operation refuses.
    f = build_flavor("O0")
    with Running(f, tmp_path) as t:
        r = run_gdb(t.pid, timeout=120, python=PRELUDE + '''
from gdb_nsb import errors
from gdb_nsb.process import engine, inferior
first = engine._main_mapping()
def unreadable(self):
    raise inferior.ProcessAccessError("cannot read the memory map of process %d: test" % self.pid)
inferior.Inferior.mappings = unreadable
try:
    engine._main_mapping()
    second = "no error"
except errors.NsbError as e:
    second = "%s %d %s" % (type(e).__name__, e.exit_code, e)
result(first=list(first), second=second)
''')
        assert len(r.results) == 1, r
        first, second = r.results[0]["first"], r.results[0]["second"]
        assert first[0] > 0 and first[1] == os.path.realpath(f.exe), first
        assert second == ("NsbError 10 cannot tell whether the process executed a new program while it ran between "
                          "safe-point tries (cannot read the memory map of process %d: test); nothing written" % t.pid)
        assert wait_running(t.pid)
