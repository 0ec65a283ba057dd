"""Hostile input: every broken patch of the corpus is refused with one clear line and its exit code,
and the target is untouched (mappings, entry bytes, values); security refusals (build-id, new_path)."""

import os

import pytest

import targets as T
from gdb_nsb import errors
from gdb_nsb.elf.image import ElfImage
from gdb_nsb.elf.livepatch import LivePatch
from hostile import corpus
from targets import nsb
from targets import stress as R


def _corpus(tmp_dir):
    return corpus.make(R.patch("both"), R.target(), tmp_dir)


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    return _corpus(str(tmp_path_factory.mktemp("hostile")))


@pytest.fixture(scope="module")
def running():
    with R.RTarget(workers=4) as t:
        yield t


def _one_line(msg):
    return msg and "\n" not in msg.strip() and "Traceback" not in msg and "internal error" not in msg


def test_corpus_reading_never_crashes(cases):
    """Reading each file (the patch model and the ELF reader) fails with a typed one-line NsbError or succeeds."""
    outcomes = {}
    for name, path, _, _ in cases:
        for reader in (lambda p: LivePatch.read(p), lambda p: ElfImage(p).segments):
            try:
                reader(path)
                outcomes.setdefault(name, "read")
            except errors.NsbError as e:
                assert _one_line(str(e)), (name, str(e))
                outcomes[name] = type(e).__name__
    assert outcomes["truncated-elf-header"] != "read" and outcomes["vzpatch-garbage"] != "read"
    print("hostile corpus: %d files read" % len(cases))




@pytest.mark.gdb
@pytest.mark.timeout(600)
def test_corpus_refused_by_nsb_patch_target_untouched(cases, running):
    t = running
    base_maps = T.maps(t.pid)
    codes, wrong = {}, []
    for name, path, code, fragment in cases:
        run = nsb("patch", "-p", t.pid, "-f", path, "--json", "--timeout", 60)
        rc, doc, err = run.returncode, run.process, run.stderr
        msg = doc.get("message", "")
        codes[name] = (rc, msg)
        # One exit code and the cause named: a case refused for another reason than the one it
        # plants (an earlier check catching it by accident) would not test its own check.
        if rc != code or fragment not in msg or not _one_line(msg):
            wrong.append((name, "exit %d (want %d)" % (rc, code), msg, "want %r" % fragment, err[-300:]))
        # The target must be untouched whatever the answer; stop at once if it is not.
        assert t.alive(), name
        assert t.values() == (0, 0), (name, rc, msg)
        assert [T.entry_state(t.pid, R.target(), f) for f in ("compute", "scale")] == ["original", "original"]
        now = T.maps(t.pid)
        # A refusal before any change leaves the maps identical; none of these cases may get further.
        assert now == base_maps, (name, rc, msg, [l for l in now if l not in base_maps])
    assert not wrong, wrong
    for name, (rc, msg) in sorted(codes.items()):
        print("%-34s exit %2d  %s" % (name, rc, msg[:150]))
    s = t.settle()
    assert s["wrong"] == 0 and s["sent"] == s["handled"], s
    print("hostile corpus: %d patches refused, target untouched" % len(codes))


@pytest.mark.gdb
@pytest.mark.timeout(240)
def test_new_path_is_never_opened(tmp_path):
    """new_path in the metadata is informational: point it at a FIFO (opening it would hang) and a bogus file."""
    from hostile.corpus import _message, _put_message
    p = R.copy_patch("both", tmp_path)
    fifo = str(tmp_path / "trap.fifo")
    os.mkfifo(fifo)
    msg = _message(p)
    msg.new_path = fifo
    _put_message(p, msg)
    with R.RTarget(workers=4) as t:
        run = nsb("patch", "-p", t.pid, "-f", p, "--json", "--timeout", 30, timeout=60)
        rc, doc, err = run.returncode, run.process, run.stderr
        assert rc == 0, (doc, err)
        assert t.values() == (100, 1000)
        run = nsb("list", "-p", t.pid, "--json", "--timeout", 90)
        rc, doc, err = run.returncode, run.process, run.stderr
        assert rc == 0 and fifo not in str(doc), doc
        run = nsb("check", "-p", t.pid, "-f", p, "--json", "--timeout", 90)
        rc, doc, err = run.returncode, run.process, run.stderr
        assert rc == 0, doc
        run = nsb("revert", "-p", t.pid, "-f", p, "--json", "--timeout", 90)
        rc, doc, err = run.returncode, run.process, run.stderr
        assert rc == 0, doc
        assert t.values() == (0, 0)


@pytest.mark.gdb
@pytest.mark.timeout(240)
def test_patch_for_other_build_of_target_refused(tmp_path):
    """A patch generated for another build of the same program (same name, other build-id) is refused."""
    other = T.build([("rtarget.c", R.TARGET_C + "\nint other_build_marker = 1;\n")],
                    ["-O2", "-flive-patching=inline-clone", "-g", "-pthread", "-fPIE", "-pie"], "rtarget")
    p = T.bind_patch(other, [("both.c", R.PATCHES["both"])], "other.so", workdir=tmp_path)
    with R.RTarget(workers=4) as t:
        base_maps = T.maps(t.pid)
        run = nsb("patch", "-p", t.pid, "-f", p, "--json", "--timeout", 90)
        rc, doc = run.returncode, run.process
        assert rc == 4 and "build-id" in doc["message"], doc
        assert T.maps(t.pid) == base_maps and t.values() == (0, 0)
        run = nsb("check", "-p", t.pid, "-f", p, "--json", "--timeout", 90)
        rc, doc = run.returncode, run.process
        assert rc == 4 and "build-id mismatch" in doc["message"], doc
