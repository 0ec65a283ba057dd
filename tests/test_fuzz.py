"""The fixed fuzz regression corpus (``tests/fuzz_corpus``): every saved input of the vzpatch decoder,
the ELF reader and the registry decoder decodes or is refused with the module's typed one-line error.

The randomized fuzzing is a separate command, ``tools/fuzz`` (seed printed; a failing input is saved
into the corpus, so this test keeps it fixed).  This test draws nothing at random: it fails only when
a decoder changes its behaviour on an input it once handled.
"""

import pytest

import fuzzing


@pytest.mark.parametrize("target", fuzzing.TARGETS)
def test_corpus(target):
    cases = fuzzing.corpus(target)
    assert len(cases) >= 10, "the %s corpus is missing (tests/fuzz_corpus/%s)" % (target, target)
    failures = [(name, fuzzing.check(target, blob)) for name, blob in cases]
    assert [f for f in failures if f[1] is not None] == []
    print("fuzz corpus %s: %d inputs, all decoded or refused cleanly" % (target, len(cases)))


def test_the_check_reports_a_foreign_exception_and_a_empty_message(monkeypatch):
    # The verdict itself: anything but a one-line NsbError is a failure.
    from gdb_nsb import errors

    def raises(exc):
        def decode(blob):
            raise exc
        return decode
    monkeypatch.setitem(fuzzing.DECODERS, "vzpatch", raises(IndexError("list index out of range")))
    assert fuzzing.check("vzpatch", b"x") == "IndexError: list index out of range"
    monkeypatch.setitem(fuzzing.DECODERS, "vzpatch", raises(errors.PatchFileError("")))
    assert fuzzing.check("vzpatch", b"x") == "PatchFileError with a message that is not one line: ''"
    monkeypatch.setitem(fuzzing.DECODERS, "vzpatch", raises(errors.PatchFileError("one line")))
    assert fuzzing.check("vzpatch", b"x") is None


def test_seed_registry_decodes_in_both_formats():
    # The corpus's registry inputs are mutations of these: they must be valid to begin with.
    v2, v1 = fuzzing.seed_registry()
    for blob in (v2, v1):
        assert fuzzing.check("registry", blob) is None
    from gdb_nsb import registry_slots as slots
    found = slots.decode(lambda o, n: v2[o:o + n], len(v2))
    assert found.registry is not None and [p.patch_build_id for p in found.registry.patches] == ["ab" * 20]
