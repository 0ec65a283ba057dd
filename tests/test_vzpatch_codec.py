"""The vzpatch wire format: byte-level compatibility with the original tool's
field numbers, our extensions, validation of corrupt input, and the
LivePatch file API on real patch files."""

import filecmp
import os
import shutil
import struct
import subprocess

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import targets as T
from gdb_nsb.elf import livepatch, sections
from gdb_nsb.elf import vzpatch_pb2 as pb
from gdb_nsb.elf.livepatch import Callback, FuncJump, LivePatch, MarkedSym, State, StaticSym
from gdb_nsb.errors import PatchFileError, UnsupportedError

ROOT = T.ROOT

# ---------------------------------------------------------------- hand encoding
# Protobuf wire format written out by hand (not with the library), so that the
# field numbers and types are checked against the specification itself.


def varint(n):
    if n < 0:
        n += 1 << 64  # int32/int64 negatives: two's complement, 10 bytes
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def key(field, wire_type):
    return varint((field << 3) | wire_type)


def f_varint(field, n):
    return key(field, 0) + varint(n)


def f_bytes(field, b):
    if isinstance(b, str):
        b = b.encode()
    return key(field, 2) + varint(len(b)) + b


TARGET_BID = "0123456789abcdef0123456789abcdef01234567"
PATCH_BID = "fedcba9876543210fedcba9876543210fedcba98"


def hand_func_jump(name, func_value, func_size, patch_value, shndx, fragments=(), entry=None):
    b = (f_bytes(1, name) + f_varint(2, func_value) + f_varint(3, func_size) + f_varint(4, patch_value)
         + f_varint(5, shndx))
    for lo, hi in fragments:
        b += f_bytes(16, f_varint(1, lo) + f_varint(2, hi))
    if entry is not None:
        b += f_bytes(17, entry)
    return b


def hand_original_patch():
    """A BinPatch as the original tool wrote it: only fields 1..7."""
    return (
        f_bytes(1, TARGET_BID)
        + f_bytes(2, PATCH_BID)
        + f_bytes(3, "/tmp/fix.so")
        + f_bytes(4, hand_func_jump("compute", 0x1139, 0x2A, 0x10F9, 14))
        + f_bytes(4, hand_func_jump("helper", 0x401000, 300, 0x1200, 15))
        + f_bytes(5, f_varint(1, 7) + f_varint(2, 0x4010))
        + f_bytes(5, f_varint(1, 9) + f_varint(2, -16))  # int64 negative: 10-byte varint
        + f_bytes(6, f_varint(1, 4) + f_varint(2, 0x1103) + f_varint(3, 0x4020))
        + f_bytes(7, f_varint(1, 3) + f_varint(2, 0x404040))
    )


def test_decodes_original_tool_encoding():
    p = LivePatch.from_bytes(hand_original_patch())
    assert p.old_bid == TARGET_BID and p.new_bid == PATCH_BID and p.new_path == "/tmp/fix.so"
    assert p.func_jumps == [FuncJump("compute", 0x1139, 0x2A, 0x10F9, 14),
                            FuncJump("helper", 0x401000, 300, 0x1200, 15)]
    assert p.manual_symbols == [MarkedSym(7, 0x4010), MarkedSym(9, -16)]
    assert p.static_symbols == [StaticSym(4, 0x1103, 0x4020)]
    assert p.global_symbols == [MarkedSym(3, 0x404040)]
    # No extensions in an original-tool section.
    assert p.format_version == 0 and p.target_name is None and p.target_is_executable is None
    assert p.func_jumps[0].fragments == [] and p.func_jumps[0].entry_bytes == b""
    assert p.func_jumps[0].busy_ranges() == [(0x1139, 0x1139 + 0x2A)]


def test_reencoding_original_tool_section_is_byte_identical():
    data = hand_original_patch()
    assert LivePatch.from_bytes(data).to_bytes() == data


def full_patch():
    return LivePatch(
        old_bid=TARGET_BID,
        new_bid=PATCH_BID,
        new_path="fix.so",
        func_jumps=[FuncJump("compute", 0x1139, 0x60, 0x10F9, 14,
                             fragments=[(0x1139, 0x1199), (0x1050, 0x1062)],
                             entry_bytes=bytes.fromhex("f30f1efa554889e5"))],
        manual_symbols=[MarkedSym(2, 0x4010)],
        static_symbols=[StaticSym(8, 0x3FE0, 0x4028)],
        global_symbols=[MarkedSym(5, 0x4030)],
        format_version=1,
        target_name="server",
        target_is_executable=True,
    )


def test_encoding_of_known_message_is_expected_bytes():
    expected = (
        f_bytes(1, TARGET_BID)
        + f_bytes(2, PATCH_BID)
        + f_bytes(3, "fix.so")
        + f_bytes(4, hand_func_jump("compute", 0x1139, 0x60, 0x10F9, 14,
                                    fragments=[(0x1139, 0x1199), (0x1050, 0x1062)],
                                    entry=bytes.fromhex("f30f1efa554889e5")))
        + f_bytes(5, f_varint(1, 2) + f_varint(2, 0x4010))
        + f_bytes(6, f_varint(1, 8) + f_varint(2, 0x3FE0) + f_varint(3, 0x4028))
        + f_bytes(7, f_varint(1, 5) + f_varint(2, 0x4030))
        + f_varint(16, 1)
        + f_bytes(17, "server")
        + f_varint(18, 1)
    )
    assert full_patch().to_bytes() == expected
    # Field 16 needs a two-byte key: (16 << 3) | 0 = 0x80 0x01.
    assert f_varint(16, 1) == b"\x80\x01\x01"
    assert LivePatch.from_bytes(expected) == full_patch()


def test_round_trip_with_extensions():
    p = full_patch()
    q = LivePatch.from_bytes(p.to_bytes())
    assert q == p
    assert q.func_jumps[0].busy_ranges() == [(0x1139, 0x1199), (0x1050, 0x1062)]


def test_optional_fields_absent_stay_absent():
    p = LivePatch(TARGET_BID, PATCH_BID, format_version=0)
    assert p.to_bytes() == f_bytes(1, TARGET_BID) + f_bytes(2, PATCH_BID)
    q = LivePatch.from_bytes(p.to_bytes())
    assert q.new_path is None and q.target_name is None and q.target_is_executable is None
    # Explicit false / empty are present and survive.
    p = LivePatch(TARGET_BID, PATCH_BID, new_path="", target_name="", target_is_executable=False)
    assert LivePatch.from_bytes(p.to_bytes()) == p


def base_only_message_class():
    """BinPatch as a reader compiled from the original .proto (fields 1..7 only) sees it."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    F = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(name="vzpatch_orig.proto", package="vzpatch_orig", syntax="proto2")

    def msg(name, fields):
        m = fdp.message_type.add(name=name)
        for fname, num, label, ftype, tname in fields:
            f = m.field.add(name=fname, number=num, label=label, type=ftype)
            if tname:
                f.type_name = ".vzpatch_orig." + tname

    REQ, OPT, REP = F.LABEL_REQUIRED, F.LABEL_OPTIONAL, F.LABEL_REPEATED
    msg("BinPatch", [("old_bid", 1, REQ, F.TYPE_STRING, None), ("new_bid", 2, REQ, F.TYPE_STRING, None),
                     ("new_path", 3, OPT, F.TYPE_STRING, None), ("func_jumps", 4, REP, F.TYPE_MESSAGE, "FuncJump"),
                     ("manual_symbols", 5, REP, F.TYPE_MESSAGE, "MarkedSym"),
                     ("static_symbols", 6, REP, F.TYPE_MESSAGE, "StaticSym"),
                     ("global_symbols", 7, REP, F.TYPE_MESSAGE, "MarkedSym")])
    msg("FuncJump", [("name", 1, REQ, F.TYPE_STRING, None), ("func_value", 2, REQ, F.TYPE_UINT64, None),
                     ("func_size", 3, REQ, F.TYPE_UINT32, None), ("patch_value", 4, REQ, F.TYPE_UINT32, None),
                     ("shndx", 5, REQ, F.TYPE_UINT32, None)])
    msg("MarkedSym", [("idx", 1, REQ, F.TYPE_INT32, None), ("addr", 2, REQ, F.TYPE_INT64, None)])
    msg("StaticSym", [("patch_size", 1, REQ, F.TYPE_INT32, None), ("patch_address", 2, REQ, F.TYPE_UINT64, None),
                      ("target_value", 3, REQ, F.TYPE_UINT64, None)])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("vzpatch_orig.BinPatch"))


def test_old_reader_skips_extensions():
    data = full_patch().to_bytes()
    Old = base_only_message_class()
    m = Old()
    m.ParseFromString(data)
    assert m.IsInitialized()
    assert (m.old_bid, m.new_bid, m.new_path) == (TARGET_BID, PATCH_BID, "fix.so")
    j = m.func_jumps[0]
    assert (j.name, j.func_value, j.func_size, j.patch_value, j.shndx) == ("compute", 0x1139, 0x60, 0x10F9, 14)
    assert [(s.idx, s.addr) for s in m.manual_symbols] == [(2, 0x4010)]
    assert [(s.idx, s.addr) for s in m.global_symbols] == [(5, 0x4030)]
    assert [(s.patch_size, s.patch_address, s.target_value) for s in m.static_symbols] == [(8, 0x3FE0, 0x4028)]
    # The old reader keeps what it does not know: its re-encoding loses nothing.
    assert m.SerializeToString() == data
    assert not Old.DESCRIPTOR.fields_by_name.get("format_version")


def test_reader_skips_unknown_future_fields():
    data = hand_original_patch() + f_varint(40, 7) + f_bytes(41, b"future")
    p = LivePatch.from_bytes(data)
    assert p.old_bid == TARGET_BID and len(p.func_jumps) == 2


def _shape(message_class):
    def label(f):
        return "required" if f.is_required else "repeated" if f.is_repeated else "optional"
    return {f.name: (f.number, label(f), f.type) for f in message_class.DESCRIPTOR.fields}


def test_generated_module_matches_proto_field_numbers():
    D = pb.BinPatch.DESCRIPTOR.fields[0]
    S, M, U32, U64, I32, I64, B, BOOL = (D.TYPE_STRING, D.TYPE_MESSAGE, D.TYPE_UINT32, D.TYPE_UINT64,
                                          D.TYPE_INT32, D.TYPE_INT64, D.TYPE_BYTES, D.TYPE_BOOL)
    assert _shape(pb.BinPatch) == {
        "old_bid": (1, "required", S), "new_bid": (2, "required", S), "new_path": (3, "optional", S),
        "func_jumps": (4, "repeated", M), "manual_symbols": (5, "repeated", M), "static_symbols": (6, "repeated", M),
        "global_symbols": (7, "repeated", M), "format_version": (16, "optional", U32),
        "target_name": (17, "optional", S), "target_is_executable": (18, "optional", BOOL),
        "required_features": (19, "repeated", S), "needs_patches": (20, "repeated", S),
        "needs_states": (21, "repeated", M), "provides_states": (22, "repeated", M),
        "cumulative": (23, "optional", BOOL), "callbacks": (24, "repeated", M),
        "shadow_variables": (25, "optional", BOOL)}
    assert _shape(pb.State) == {"id": (1, "required", U64), "version": (2, "required", U32)}
    assert _shape(pb.FuncJump) == {
        "name": (1, "required", S), "func_value": (2, "required", U64), "func_size": (3, "required", U32),
        "patch_value": (4, "required", U32), "shndx": (5, "required", U32), "fragments": (16, "repeated", M),
        "entry_bytes": (17, "optional", B)}
    assert _shape(pb.Range) == {"start": (1, "required", U64), "end": (2, "required", U64)}
    assert _shape(pb.MarkedSym) == {"idx": (1, "required", I32), "addr": (2, "required", I64)}
    assert _shape(pb.StaticSym) == {"patch_size": (1, "required", I32), "patch_address": (2, "required", U64),
                                    "target_value": (3, "required", U64)}
    assert _shape(pb.Callback) == {"kind": (1, "required", S), "name": (2, "required", S),
                                   "patch_value": (3, "required", U64)}


# ---------------------------------------------------------------- required features (patch series)

OTHER_BID = "ab" * 20


def series_patch():
    return LivePatch(TARGET_BID, PATCH_BID, format_version=0, needs_patches=[OTHER_BID],
                     needs_states=[State(7, 1)], provides_states=[State(7, 2), State(9, 1)], cumulative=True)


def test_series_fields_and_their_features_on_the_wire():
    expected = (base() + f_bytes(19, "cumulative") + f_bytes(19, "dependencies") + f_bytes(19, "states")
                + f_bytes(20, OTHER_BID) + f_bytes(21, f_varint(1, 7) + f_varint(2, 1))
                + f_bytes(22, f_varint(1, 7) + f_varint(2, 2)) + f_bytes(22, f_varint(1, 9) + f_varint(2, 1))
                + f_varint(23, 1))
    assert series_patch().to_bytes() == expected
    assert LivePatch.from_bytes(expected) == series_patch()
    assert series_patch().required_features() == ["cumulative", "dependencies", "states"]


def test_each_feature_is_written_exactly_when_used():
    assert LivePatch(TARGET_BID, PATCH_BID).required_features() == []
    assert LivePatch(TARGET_BID, PATCH_BID, cumulative=True).required_features() == ["cumulative"]
    assert LivePatch(TARGET_BID, PATCH_BID, needs_states=[State(1, 1)]).required_features() == ["dependencies"]
    assert LivePatch(TARGET_BID, PATCH_BID, needs_patches=[OTHER_BID]).required_features() == ["dependencies"]
    assert LivePatch(TARGET_BID, PATCH_BID, provides_states=[State(1, 1)]).required_features() == ["states"]
    assert LivePatch(TARGET_BID, PATCH_BID, callbacks=[Callback("pre_patch", "f", 16)]).required_features() \
        == ["callbacks"]
    assert LivePatch(TARGET_BID, PATCH_BID, shadow_variables=True).required_features() == ["shadow"]
    # A patch using none of them encodes no field 19 (and no 20-23): old readers see the same bytes as before.
    assert b"\x9a\x01" not in full_patch().to_bytes()


def test_unknown_feature_is_refused_as_unsupported():
    with pytest.raises(UnsupportedError) as e:
        LivePatch.from_bytes(base() + f_bytes(19, "states") + f_bytes(19, "teleport"))
    assert e.value.exit_code == 13
    msg = str(e.value)
    assert "'teleport'" in msg and "\n" not in msg and "newer gdb-nsb" in msg
    # The fields carrying an unknown feature would be skipped silently: the refusal comes first, even when the
    # rest of the section is well formed and only the feature list is new.
    with pytest.raises(UnsupportedError, match="hotswap"):
        LivePatch.from_bytes(hand_original_patch() + f_bytes(19, "hotswap"))


def test_known_feature_without_its_fields_is_accepted():
    p = LivePatch.from_bytes(base() + f_bytes(19, "cumulative"))
    assert p.cumulative is False and p.required_features() == []


def test_old_reader_would_apply_a_cumulative_patch_silently():
    """Why field 19 exists: a reader compiled without 20-23 parses a cumulative patch without complaint."""
    m = base_only_message_class()()
    m.ParseFromString(series_patch().to_bytes())
    assert m.IsInitialized()


def test_series_value_sanity():
    assert "not a build-id" in corrupt(base() + f_bytes(20, "XYZ"))
    assert "needs itself" in corrupt(base() + f_bytes(20, PATCH_BID))
    assert "listed twice" in corrupt(base() + f_bytes(20, OTHER_BID) * 2)
    assert "state 3 is listed twice" in corrupt(base() + f_bytes(22, f_varint(1, 3) + f_varint(2, 1)) * 2)
    assert "needs_states" in corrupt(base() + f_bytes(21, f_varint(1, 3)))  # version missing


# ---------------------------------------------------------------- corrupt input


def corrupt(data):
    with pytest.raises(PatchFileError) as ei:
        LivePatch.from_bytes(data)
    msg = str(ei.value)
    assert "\n" not in msg and msg.startswith("vzpatch section is corrupt: "), msg
    return msg


def test_garbage_is_corrupt():
    assert "not a BinPatch" in corrupt(b"\xff\xff\xff\xff\xff")
    corrupt(b"this is not a protobuf at all, just text")
    assert "empty" in corrupt(b"")


def read_varint(data, pos):
    shift = value = 0
    while True:
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, pos


def top_level_field_ends(data):
    """Offsets where a top-level field ends (walking the wire format by hand)."""
    ends, pos = set(), 0
    while pos < len(data):
        k, pos = read_varint(data, pos)
        if k & 7 == 0:
            _, pos = read_varint(data, pos)
        else:
            assert k & 7 == 2
            n, pos = read_varint(data, pos)
            pos += n
        ends.add(pos)
    return ends


def test_every_truncation_is_refused():
    # Protobuf has no length of its own: a cut exactly between two top-level
    # fields is a shorter valid message.  Every other cut must be refused.
    data = full_patch().to_bytes()
    boundaries = top_level_field_ends(data)
    accepted = []
    for n in range(1, len(data)):
        try:
            LivePatch.from_bytes(data[:n])
        except PatchFileError as e:
            assert str(e).startswith("vzpatch section is corrupt: ")
        else:
            accepted.append(n)
    assert set(accepted) <= boundaries
    # Cutting before new_bid is complete loses a required field: refused.
    assert min(accepted) == len(f_bytes(1, TARGET_BID) + f_bytes(2, PATCH_BID))


def test_missing_required_fields():
    assert "new_bid" in corrupt(f_bytes(1, TARGET_BID))
    jump_without_name = f_varint(2, 0x1139) + f_varint(3, 8) + f_varint(4, 0x10) + f_varint(5, 1)
    msg = corrupt(f_bytes(1, TARGET_BID) + f_bytes(2, PATCH_BID) + f_bytes(4, jump_without_name))
    assert "func_jumps[0].name" in msg
    assert "addr" in corrupt(f_bytes(1, TARGET_BID) + f_bytes(2, PATCH_BID) + f_bytes(5, f_varint(1, 3)))


def base():
    return f_bytes(1, TARGET_BID) + f_bytes(2, PATCH_BID)


def test_bad_build_ids():
    assert "old_bid" in corrupt(f_bytes(1, TARGET_BID.upper()) + f_bytes(2, PATCH_BID))
    assert "new_bid" in corrupt(f_bytes(1, TARGET_BID) + f_bytes(2, "abc"))
    corrupt(f_bytes(1, "") + f_bytes(2, PATCH_BID))
    corrupt(f_bytes(1, "zz" * 20) + f_bytes(2, PATCH_BID))
    corrupt(f_bytes(1, "ab" * 65) + f_bytes(2, PATCH_BID))


def test_invalid_utf8_string():
    assert "new_path is not valid UTF-8" in corrupt(base() + f_bytes(3, b"\xff\xfe"))
    assert "func_jumps.name is not valid UTF-8" in corrupt(base() + f_bytes(4, hand_func_jump(b"\xc3", 0x10, 8, 0, 1)))


def test_value_sanity():
    assert "patch_size 3" in corrupt(base() + f_bytes(6, f_varint(1, 3) + f_varint(2, 0x10) + f_varint(3, 0x20)))
    assert "size 0" in corrupt(base() + f_bytes(4, hand_func_jump("f", 0x1000, 0, 0x10, 1)))
    assert "invalid function name" in corrupt(base() + f_bytes(4, hand_func_jump("", 0x1000, 8, 0x10, 1)))
    assert "both redirect" in corrupt(base() + f_bytes(4, hand_func_jump("f", 0x1000, 8, 0x10, 1))
                                      + f_bytes(4, hand_func_jump("g", 0x1000, 8, 0x20, 1)))
    assert "no fragment holds" in corrupt(base() + f_bytes(4, hand_func_jump("f", 0x1000, 8, 0x10, 1,
                                                                              fragments=[(0x2000, 0x2010)])))
    assert "empty" in corrupt(base() + f_bytes(4, hand_func_jump("f", 0x1000, 8, 0x10, 1,
                                                                  fragments=[(0x1000, 0x1008), (0x50, 0x50)])))
    assert "entry bytes" in corrupt(base() + f_bytes(4, hand_func_jump("f", 0x1000, 8, 0x10, 1, entry=b"\x90" * 65)))
    assert "index 0" in corrupt(base() + f_bytes(5, f_varint(1, 0) + f_varint(2, 0x10)))
    assert "bound twice" in corrupt(base() + f_bytes(5, f_varint(1, 4) + f_varint(2, 0x10))
                                    + f_bytes(5, f_varint(1, 4) + f_varint(2, 0x20)))
    # The same binding twice is harmless.
    LivePatch.from_bytes(base() + f_bytes(5, f_varint(1, 4) + f_varint(2, 0x10)) * 2)


def test_oversized_section_refused():
    big = base() + f_bytes(3, b"x" * livepatch.MAX_SECTION_SIZE)
    assert "MiB limit" in corrupt(big)


def test_encoding_refuses_invalid_patch():
    p = full_patch()
    p.static_symbols.append(StaticSym(2, 0x10, 0x20))
    with pytest.raises(PatchFileError, match="cannot encode vzpatch section: static_symbols"):
        p.to_bytes()
    with pytest.raises(PatchFileError, match="old_bid"):
        LivePatch("ABCD", PATCH_BID).to_bytes()
    with pytest.raises(PatchFileError, match="invalid function name"):
        LivePatch(TARGET_BID, PATCH_BID, func_jumps=[FuncJump("\ud800", 0x10, 8, 0, 1)]).to_bytes()
    with pytest.raises(PatchFileError, match="target_name"):
        LivePatch(TARGET_BID, PATCH_BID, target_name="\udcff").to_bytes()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200))
def test_random_bytes_decode_or_refuse(data):
    try:
        p = LivePatch.from_bytes(data)
    except PatchFileError as e:
        assert str(e).startswith("vzpatch section is corrupt: ")
    except UnsupportedError as e:  # field 19 (required_features) holding a name we do not know
        assert str(e).startswith("the patch requires feature ")
    else:
        assert p.problem() is None


bids = st.integers(1, 64).flatmap(lambda n: st.binary(min_size=n, max_size=n)).map(bytes.hex)
u32 = st.integers(0, (1 << 32) - 1)
utf8 = st.characters(blacklist_categories=("Cs",))  # lone surrogates cannot be encoded
u64 = st.integers(0, (1 << 64) - 1)


@st.composite
def func_jumps(draw):
    entry = draw(st.integers(0, (1 << 48)))
    size = draw(st.integers(1, (1 << 32) - 1))
    spans = st.tuples(st.integers(0, 1 << 48), st.integers(1, 1 << 20)).map(lambda t: (t[0], t[0] + t[1]))
    frags = draw(st.lists(spans, max_size=3))
    if frags:
        frags.insert(draw(st.integers(0, len(frags))), (entry, entry + size))
    name = draw(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), min_size=1,
                        max_size=20))
    return FuncJump(name, entry, size, draw(u32), draw(u32), frags, draw(st.binary(max_size=20)))


@st.composite
def patches(draw):
    jumps = draw(st.lists(func_jumps(), max_size=4, unique_by=lambda j: j.func_value))
    ordered = sorted(jumps, key=lambda j: j.func_value)
    assume(all(a.func_value + a.func_size <= b.func_value for a, b in zip(ordered, ordered[1:])))  # no overlap
    syms = st.lists(st.builds(MarkedSym, st.integers(1, (1 << 31) - 1), st.integers(-(1 << 63), (1 << 63) - 1)),
                    max_size=4, unique_by=lambda s: s.idx)
    new_bid = draw(bids)
    states = st.lists(st.builds(State, u64, u32), max_size=3, unique_by=lambda s: s.id)
    return LivePatch(draw(bids), new_bid, draw(st.none() | st.text(utf8, max_size=30)), jumps, draw(syms),
                     draw(st.lists(st.builds(StaticSym, st.sampled_from([4, 8]), u64, u64), max_size=4)),
                     draw(syms), draw(st.integers(0, 5)), draw(st.none() | st.text(utf8, max_size=20)),
                     draw(st.none() | st.booleans()),
                     draw(st.lists(bids.filter(lambda b: b != new_bid), max_size=3, unique=True)),
                     draw(states), draw(states), draw(st.booleans()))


def test_overlapping_functions_are_refused():
    """A function whose entry lies inside another replaced function: its jump would overwrite the
    other's body (or jump), so neither version would run intact."""
    a = FuncJump("a", 0x1000, 0x40, 0x100, 0, [], b"")
    b = FuncJump("b", 0x1020, 0x10, 0x200, 0, [], b"")
    c = FuncJump("c", 0x1040, 0x10, 0x300, 0, [], b"")
    assert LivePatch("aa", "bb", None, [a, c]).problem() is None  # adjacent is fine
    assert LivePatch("aa", "bb", None, [c, b, a]).problem() == "functions a [0x1000, +0x40) and b at 0x1020 overlap"
    with pytest.raises(PatchFileError, match="overlap"):
        LivePatch.from_bytes(_overlapping_bytes(a, b))


def _overlapping_bytes(a, b):
    m = pb.BinPatch(old_bid="aa", new_bid="bb")
    for j in (a, b):
        fj = m.func_jumps.add()
        fj.name, fj.func_value, fj.func_size, fj.patch_value = j.name, j.func_value, j.func_size, j.patch_value
        fj.shndx = 0
    return m.SerializeToString()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(patches())
def test_round_trip_property(p):
    data = p.to_bytes()
    assert LivePatch.from_bytes(data) == p
    assert LivePatch.from_bytes(data).to_bytes() == data


# ---------------------------------------------------------------- generated module


def test_generated_module_is_reproducible(tmp_path):
    """tools/gen-proto (its own cached venv with the pinned protoc) gives the checked-in bytes."""
    import sys

    env = dict(os.environ, NSB_PYTHON=sys.executable)
    for out in ("one", "two"):
        subprocess.run([os.path.join(ROOT, "tools", "gen-proto"), str(tmp_path / out)], check=True, env=env,
                       timeout=120)
    checked_in = os.path.join(ROOT, "gdb_nsb", "elf", "vzpatch_pb2.py")
    assert filecmp.cmp(tmp_path / "one" / "vzpatch_pb2.py", tmp_path / "two" / "vzpatch_pb2.py", shallow=False)
    assert filecmp.cmp(tmp_path / "one" / "vzpatch_pb2.py", checked_in, shallow=False), \
        "vzpatch_pb2.py is stale: run tools/gen-proto"


def test_generated_module_suits_every_pinned_protobuf_runtime():
    """The gencode checks at import that its runtime is not older than it (and, runtime 6, of its major): it
    must suit the protobuf pinned for the oldest and for the newest Python alike."""
    import re

    from gdb_nsb import loadcheck

    with open(os.path.join(ROOT, "gdb_nsb", "elf", "vzpatch_pb2.py")) as f:
        gen = tuple(int(x) for x in re.search(r"Protobuf Python Version: (\d+)\.(\d+)\.(\d+)", f.read()).groups())
    with open(os.path.join(ROOT, "pyproject.toml")) as f:
        reqs = loadcheck.pyproject_requirements(f.read())
    runtimes = {tuple(int(x) for x in dict(loadcheck.pins(reqs, (3, minor)))["protobuf"].split("."))
                for minor in range(9, 14)}
    assert len(runtimes) == 2  # one pin for 3.9, one for 3.10+
    for runtime in runtimes:
        assert gen <= runtime and gen[0] in (runtime[0], runtime[0] - 1), (gen, runtime)
    assert gen[0] == min(runtimes)[0]


# ---------------------------------------------------------------- patch files

PATCH_SRC = r'''
int compute(int x) { return x * 3 + 1; }
int helper_only_in_patch(int y) { return y - 2; }
'''


@pytest.fixture
def patch_so(tmp_path):
    src = T.build_patch([("fix.c", PATCH_SRC)], "fix.so", extra=["-Wl,--build-id=sha1"])
    path = tmp_path / "fix.so"
    shutil.copy(src, path)
    return str(path)


def readelf_build_id(path):
    out = T.tool("readelf", "-n", path)
    for line in out.splitlines():
        if "Build ID:" in line:
            return line.split("Build ID:")[1].strip()
    return None


def test_build_id_of_matches_readelf(patch_so):
    bid = livepatch.build_id_of(patch_so)
    assert bid and bid == readelf_build_id(patch_so)
    nobid = T.build_patch([("nobid.c", PATCH_SRC)], "nobid.so", extra=["-Wl,--build-id=none"])
    assert livepatch.build_id_of(nobid) is None


def patch_for(path):
    p = full_patch()
    p.new_bid = livepatch.build_id_of(path)
    return p


def test_write_into_and_read_back(patch_so, tmp_path):
    p = patch_for(patch_so)
    out = str(tmp_path / "bound.so")
    assert p.write_into(patch_so, out) == os.path.realpath(out)
    assert sections.read_section(patch_so, "vzpatch") is None  # source untouched
    q = LivePatch.read(out)
    assert q == p and q.path == out
    # Replacing with other contents, then with the first again, is idempotent.
    before = open(out, "rb").read()
    r = patch_for(patch_so)
    r.func_jumps = []
    r.write_into(out)
    assert LivePatch.read(out) == r
    p.write_into(out)
    assert open(out, "rb").read() == before


def test_read_refusals(patch_so, tmp_path):
    with pytest.raises(PatchFileError, match="patch file not found"):
        LivePatch.read(str(tmp_path / "missing.so"))
    text = tmp_path / "notes.txt"
    text.write_text("hello, not an ELF file\n")
    with pytest.raises(PatchFileError, match="not an ELF file"):
        LivePatch.read(str(text))
    with pytest.raises(PatchFileError) as ei:
        LivePatch.read(patch_so)
    assert str(ei.value) == "no vzpatch section in %s: run `nsb generate` on it first" % patch_so
    sections.write_section(patch_so, "vzpatch", b"\x0a\x05abc")
    with pytest.raises(PatchFileError) as ei:
        LivePatch.read(patch_so)
    assert str(ei.value).startswith("vzpatch section is corrupt: ") and patch_so in str(ei.value)


def test_read_refuses_section_of_another_patch(patch_so):
    p = full_patch()  # new_bid is not this file's build-id
    p.write_into(patch_so)
    with pytest.raises(PatchFileError, match="names patch build-id %s but the file's build-id is" % PATCH_BID):
        LivePatch.read(patch_so)
    assert LivePatch.read(patch_so, check_identity=False) == p


def test_section_is_raw_protobuf_without_header(patch_so):
    p = patch_for(patch_so)
    p.write_into(patch_so)
    raw = sections.read_section(patch_so, "vzpatch")
    assert raw == p.to_bytes()
    assert raw[:1] == b"\x0a"  # field 1, length-delimited: no magic in front
    m = pb.BinPatch()
    m.ParseFromString(raw)
    assert m.new_bid == p.new_bid
    assert struct.unpack_from("<B", raw, 1)[0] == len(TARGET_BID)
