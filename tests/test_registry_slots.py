"""The registry mapping's two slots and commit word (gdb_nsb/registry_slots.py), pure.

The property that matters: whatever prefix of an update's writes reached the
mapping (the tool killed after any one of them), the mapping decodes, to the
old record before the commit word and to the new one after it.
"""

import pytest

from gdb_nsb import registry_slots as slots
from gdb_nsb.errors import RegistryCorrupt
from gdb_nsb.registry import MappedRange, PatchRecord, Registry

SIZE = 8192


def reg(n, generation=1):
    r = Registry(generation=generation)
    for i in range(n):
        r.patches.append(PatchRecord("%040x" % i, "cd" * 20, "/bin/t", 0x400000, 0x7f0000000000 + i * 0x1000,
                                     [MappedRange(0x7f0000000000 + i * 0x1000, 0x1000, 5)], "/tmp/p%d.so" % i))
    return r


def decode(mem):
    return slots.decode(lambda off, n: bytes(mem[off:off + n]), len(mem), "registry at 0x1000")


def apply(mem, writes):
    for off, data, _ in writes:
        mem[off:off + len(data)] = data


def test_fresh_mapping_holds_nothing_then_first_commit():
    mem = bytearray(SIZE)
    f = decode(mem)
    assert f.registry is None and not f.formatted
    writes = slots.commit_writes(f, reg(1), SIZE)
    assert [w[2] for w in writes] == ["registry superblock", "registry slot 1 (commit 1)", "registry commit 1"]
    assert writes[-1][0] == slots.SEQ_OFFSET and len(writes[-1][1]) == 8 and slots.SEQ_OFFSET % 8 == 0
    apply(mem, writes)
    g = decode(mem)
    assert g.registry == reg(1) and g.seq == 1 and g.slot == 1


def test_every_prefix_of_every_update_decodes_to_old_or_new():
    mem = bytearray(SIZE)
    f = decode(mem)
    states = [reg(0)] + [reg(n) for n in (1, 3, 2, 5, 0)]
    for old, new in zip(states, states[1:]):
        f = decode(mem)
        writes = slots.commit_writes(f, new, SIZE)
        for k in range(len(writes) + 1):
            trial = bytearray(mem)
            apply(trial, writes[:k])
            got = decode(trial)
            want = new if k == len(writes) else (old if f.registry is not None else None)
            assert got.registry == want, (k, writes[k - 1][2] if k else "none")
        apply(mem, writes)
        assert slots.after_commit(f, new, SIZE).seq == decode(mem).seq


def test_torn_slot_write_never_matters():
    """A slot write cut anywhere (only possible if a write were not atomic) leaves the old record."""
    mem = bytearray(SIZE)
    apply(mem, slots.commit_writes(decode(mem), reg(2), SIZE))
    f = decode(mem)
    off, data, _ = slots.commit_writes(f, reg(4), SIZE)[0]
    for cut in range(0, len(data), 7):
        trial = bytearray(mem)
        trial[off:off + cut] = data[:cut]
        assert decode(trial).registry == reg(2)


def test_corrupt_committed_slot_falls_back_to_the_previous_commit_and_next_write_spares_it():
    mem = bytearray(SIZE)
    apply(mem, slots.commit_writes(decode(mem), reg(1), SIZE))
    apply(mem, slots.commit_writes(decode(mem), reg(2), SIZE))
    f = decode(mem)
    cur = slots.slot_offset(f.slot, f.slot_size)
    mem[cur + 40] ^= 0x20
    g = decode(mem)
    assert g.registry == reg(1) and g.slot != f.slot and "CRC" in g.note
    # The next commit must overwrite the corrupt slot, never the only valid one.
    writes = slots.commit_writes(g, reg(3), SIZE)
    assert writes[0][0] == cur
    for k in range(len(writes) + 1):
        trial = bytearray(mem)
        apply(trial, writes[:k])
        assert decode(trial).registry == (reg(3) if k == len(writes) else reg(1))


def test_no_valid_slot_is_read_only():
    mem = bytearray(SIZE)
    apply(mem, slots.commit_writes(decode(mem), reg(1), SIZE))
    f = decode(mem)
    mem[slots.slot_offset(f.slot, f.slot_size) + 40] ^= 1
    with pytest.raises(RegistryCorrupt) as e:
        decode(mem)
    msg = str(e.value)
    assert "no valid slot" in msg and "fails its CRC check" in msg and "read-only mode" in msg and "\n" not in msg


@pytest.mark.parametrize("offset,value,words", [(0, b"X" * 8, "magic"), (8, b"\x63\0\0\0", "version 99"),
                                                 (12, b"\x10\0\0\0", "slot size"),
                                                 (16, b"\x09" + b"\0" * 7, "commit word says 9")])
def test_bad_superblock_is_named(offset, value, words):
    mem = bytearray(SIZE)
    apply(mem, slots.commit_writes(decode(mem), reg(1), SIZE))
    mem[offset:offset + len(value)] = value
    with pytest.raises(RegistryCorrupt) as e:
        decode(mem)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_format_1_is_read_and_does_not_take_slot_writes():
    old = reg(2, generation=4)
    mem = bytearray(SIZE)
    data = old.encode()
    mem[:len(data)] = data
    f = decode(mem)
    assert f.version == 1 and f.registry == old and f.generation == 4
    assert slots.commit_writes(f, reg(3), SIZE) is None  # the store migrates to a new mapping


def test_a_record_too_large_for_a_slot_asks_for_a_new_mapping():
    mem = bytearray(4096)
    f = decode(mem)
    big = reg(60)
    assert slots.commit_writes(f, big, 4096) is None
    size = slots.mapping_size_for(len(big.encode_payload()))
    assert slots.commit_writes(slots.Found(None, slots.FORMAT_VERSION, 2), big, size) is not None


def _format_2_payload(registry):
    """The payload a format 2 tool wrote: each record without the four series counts at its end (and without
    the callbacks' count and state after them)."""
    return _cut_records(registry, 16 + 8)


def _cut_records(registry, tail):
    import struct
    out = [struct.pack("<I", len(registry.patches))]
    for p in registry.patches:
        assert not (p.needs or p.needs_states or p.states or p.replaced or p.callbacks or p.callback_state)
        rec = Registry(patches=[p]).encode_payload()[8:]  # count, then the one record's length
        assert rec.endswith(b"\0" * tail)
        out.append(struct.pack("<I", len(rec) - tail) + rec[:-tail])
    return b"".join(out)


def test_format_3_records_written_before_callbacks_read_without_them():
    r = reg(2)
    got = Registry.decode_payload(_cut_records(r, 8), 1)
    assert got == r and all(p.callbacks == [] and p.callback_state == "" for p in got.patches)


def test_callbacks_and_their_state_round_trip_in_format_3():
    r = reg(2)
    r.patches[0].callbacks = [("pre_patch", 0x7f0000001000, "fix_pre"), ("post_unpatch", 2**64 - 1, "bye")]
    r.patches[1].callback_state = "failed: post-patch callback fix_post timed out after 2 s"
    mem = bytearray(SIZE)
    apply(mem, slots.commit_writes(decode(mem), r, SIZE))
    assert decode(mem).registry == r


def test_format_2_is_read_and_moved_to_format_3_at_the_next_write():
    old = reg(2, generation=5)
    mem = bytearray(SIZE)
    size = slots.slot_size_for(SIZE)
    mem[:32] = slots._SUPER.pack(slots.MAGIC, 2, size, 1, 5)
    slot = slots.slot_bytes(_format_2_payload(old), 1, 5)
    off = slots.slot_offset(1, size)
    mem[off:off + len(slot)] = slot
    f = decode(mem)
    assert f.version == 2 and f.registry == old and f.seq == 1
    assert all(p.needs == p.needs_states == p.states == p.replaced == [] for p in f.registry.patches)
    # Never a format 3 record in a format 2 mapping: an older tool would drop its series fields.
    assert slots.commit_writes(f, reg(3), SIZE) is None


def test_series_fields_round_trip_in_format_3():
    r = reg(2)
    r.patches[0].needs = ["ab" * 20]
    r.patches[0].states = [(7, 2), (2**64 - 1, 2**32 - 1)]
    r.patches[0].needs_states = [(3, 1)]
    r.patches[1].replaced = ["cd" * 20, "ef" * 20]
    mem = bytearray(SIZE)
    apply(mem, slots.commit_writes(decode(mem), r, SIZE))
    g = decode(mem)
    assert g.version == 3 and g.registry == r


def test_an_older_tool_refuses_format_4():
    mem = bytearray(SIZE)
    apply(mem, slots.commit_writes(decode(mem), reg(1), SIZE))
    mem[8:12] = b"\x04\0\0\0"
    with pytest.raises(RegistryCorrupt, match="format version 4; this tool reads versions 1 to 3"):
        decode(mem)
