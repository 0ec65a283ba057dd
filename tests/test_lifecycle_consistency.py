"""Registry against memory (partial states) and against the target file (never restore garbage)."""

import copy
import dataclasses

import pytest

from binder_fakes import EXE_BIAS, FakeMemory, applied_sim, build_world, fake_object, make_view
from gdb_nsb import errors
from gdb_nsb.lifecycle.consistency import consistency, verify_saved_bytes
from gdb_nsb.registry import STATE_INACTIVE


@pytest.fixture(scope="module", params=["plain", "cet"])
def world(request):
    return build_world(request.param)


def test_memory_holding_the_top_jumps_is_consistent(world):
    sim = applied_sim(world, "A", "B")
    assert consistency(sim.registry, sim.mem, sim.view()) == []
    assert consistency(sim.registry, sim.mem) == []


def test_an_entry_without_the_top_jump_is_a_problem(world):
    sim = applied_sim(world, "A", "B")
    entry = sim.registry.entries()[0]
    top_bid, top = sim.registry.stack(entry)[-1]
    sim.mem.write(entry, b"\xcc")
    problems = consistency(sim.registry, sim.mem, sim.view())
    assert problems == ["f at %#x holds %s, the registry expects the jump of patch %s (%s)"
                        % (entry, sim.mem.read(entry, len(top.jump)).hex(), top_bid[:16], top.jump.hex())]
    unreadable = consistency(sim.registry, FakeMemory(), sim.view())
    assert len(unreadable) == 1 and unreadable[0].startswith("cannot read %#x: " % entry)


def test_records_of_an_unloaded_target_are_left_out(world):
    sim = applied_sim(world, "A")
    sim.mem.write(sim.registry.entries()[0], b"\xcc")
    moved = make_view([fake_object(sim.target, EXE_BIAS + 0x100000, is_main_executable=True)])
    assert consistency(sim.registry, sim.mem, moved) == []
    assert len(consistency(sim.registry, sim.mem)) == 1  # without a view nothing is known to be unloaded


def test_an_inactive_patch_whose_jump_is_still_there(world):
    sim = applied_sim(world, "A")
    reg = copy.deepcopy(sim.registry)
    rec = reg.patches[0]
    rec.state = STATE_INACTIVE  # as if the registry was stored before the jumps were restored
    f = rec.functions[0]
    assert consistency(reg, sim.mem, sim.view()) == [
        "f at %#x still jumps into inactive patch %s" % (f.entry, rec.patch_build_id[:16])]
    sim.mem.write(f.entry, f.original)
    assert consistency(reg, sim.mem, sim.view()) == []


def test_saved_bytes_must_be_the_target_files(world):
    sim = applied_sim(world, "A")
    rec = sim.registry.patches[0]
    verify_saved_bytes(sim.view(), rec)
    f = rec.functions[0]
    forged = dataclasses.replace(rec, functions=[dataclasses.replace(f, original=b"\x90" * len(f.original))])
    with pytest.raises(errors.RegistryCorrupt, match="differ from the target file"):
        verify_saved_bytes(sim.view(), forged)
    # The layer below is another patch's jump, not the file's bytes: not compared.
    below = dataclasses.replace(forged, functions=[dataclasses.replace(forged.functions[0], below="ab" * 20)])
    verify_saved_bytes(sim.view(), below)
    # Target not mapped: nothing to compare with (the revert writes nothing then).
    verify_saved_bytes(make_view([]), forged)


def test_saved_bytes_outside_the_file_refuse_with_the_cause(world):
    """An entry the file has no bytes for cannot be checked: refused, never skipped (issue 14)."""
    sim = applied_sim(world, "A")
    rec = sim.registry.patches[0]
    f = rec.functions[0]
    nowhere = EXE_BIAS + 0x40000000
    outside = dataclasses.replace(rec, functions=[dataclasses.replace(f, entry=nowhere)])
    with pytest.raises(errors.RegistryCorrupt) as e:
        verify_saved_bytes(sim.view(), outside)
    msg = str(e.value)
    assert msg.startswith("saved bytes of f at %#x cannot be checked against the target file" % nowhere)
    assert "not inside one PT_LOAD segment" in msg and msg.endswith("refusing to restore them")
    assert "\n" not in msg
