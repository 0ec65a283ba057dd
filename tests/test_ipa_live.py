"""The IPA decision table's evidence, live (docs/IPA.md): for each caller-side pass, the naive patch
of tests/fixtures/ipa, forced through the generator's refusal with --allow-ipa-ra, really
misbehaves in the running process (a wrong value, or a crash); the same source built
-flive-patching=inline-clone is patched by the generator without override and gives the right
value.  Re-run on a new GCC to re-check the table."""

import os
import shutil

import pytest

from gdb_nsb.generator import generate_file
from targets import Target, nsb
from test_generator_ipa import CALLER_SIDE, CONTROL, build_target, naive_patch, only

pytestmark = [pytest.mark.gdb, pytest.mark.timeout(300)]


def _value(t):
    line = t.ask("run")
    assert line.startswith("value "), line
    return int(line.split()[1])


def _patched(pass_, flags, tmp_path, **kw):
    exe = build_target(pass_, flags)
    patch = os.path.join(str(tmp_path), "%s.so" % pass_)
    shutil.copyfile(naive_patch(pass_), patch)
    generate_file(exe, patch, **kw)
    return exe, patch


@pytest.mark.parametrize("pass_", sorted(CALLER_SIDE))
def test_naive_patch_misbehaves_where_the_table_says(pass_, tmp_path):
    old, right = CALLER_SIDE[pass_]
    exe, patch = _patched(pass_, only(pass_), tmp_path, allow_ipa_ra=True)
    with Target([exe], ready_line="ready", timeout=20) as t:
        assert _value(t) == old
        run = nsb("patch", "-p", t.pid, "-f", patch, "--json", "--timeout", 90)
        rc, doc = run.returncode, run.process
        assert rc == 0, doc
        if pass_ == "ipa-stack-alignment":
            # snprintf("%f") in the replacement stores SSE registers with movaps on a stack the
            # caller left at 8 mod 16: the process dies of SIGSEGV.
            with pytest.raises(EOFError):
                _value(t)
            t.proc.wait(timeout=10)
            assert t.proc.returncode == -11, t.proc.returncode
        else:
            got = _value(t)
            print("%s: naive patch gives %d, a correct one %d" % (pass_, got, right))
            assert got != right, "the naive patch behaved: %s is not caller-side here" % pass_


@pytest.mark.parametrize("pass_", sorted(CALLER_SIDE))
def test_live_patching_build_takes_the_same_patch(pass_, tmp_path):
    old, right = CALLER_SIDE[pass_]
    exe, patch = _patched(pass_, CONTROL, tmp_path)
    with Target([exe], ready_line="ready", timeout=20) as t:
        assert _value(t) == old
        run = nsb("patch", "-p", t.pid, "-f", patch, "--json", "--timeout", 90)
        rc, doc = run.returncode, run.process
        assert rc == 0, doc
        assert _value(t) == right
