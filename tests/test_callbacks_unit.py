"""Callbacks and shadow variables, the pure parts: vzp.h records compiled for real and parsed back, the
section's callbacks field, the generator's refusals, and the shadow region's layout."""

import struct

import pytest

import targets as T
from gdb_nsb import shadow
from gdb_nsb.elf.image import ElfImage
from gdb_nsb.elf.livepatch import Callback, LivePatch
from gdb_nsb.elf.records import parse_records, read_records
from gdb_nsb.errors import CallbackFailed, CallbackRefused, GenerateError, PatchFileError
from gdb_nsb.generator import generate
from gdb_nsb.lifecycle import callbacks as cbl
from gdb_nsb.mappings import Mapping
from gdb_nsb.registry import PatchRecord

pytestmark = pytest.mark.timeout(120)

TARGET_C = r'''
struct conn { int fd; int hits; };
__attribute__((noinline)) int serve(struct conn *c) { return c->hits++; }
int main(void) { struct conn c = {0, 0}; return serve(&c) - 1; }
'''

SERVE_C = 'struct conn { int fd; int hits; };\nint serve(struct conn *c) { return c->hits + 1; }\n'
CALLBACKS_C = r'''#include "vzp.h"
int cb_pre(void) { return 0; }
VZP_PRE_PATCH(cb_pre)
void cb_post(void) { }
VZP_POST_PATCH(cb_post);
int cb_pre_un(void) { return 0; }
VZP_PRE_UNPATCH(cb_pre_un)
void cb_post_un(void) { vzp_shadow_free_all(7, 0); }
VZP_POST_UNPATCH(cb_post_un)
''' + SERVE_C


def _target():
    return T.build([("t.c", TARGET_C)], ["-O0", "-g", "-fno-ipa-stack-alignment"], "cb-unit-target")


def test_callback_records_parse_in_source_order():
    so = T.build_patch([("cb.c", CALLBACKS_C)], "cb-records.so")
    recs = read_records(so)
    assert [(r.kind, r.patch_symbol, r.source_line) for r in recs] == [
        ("pre_patch", "cb_pre", 3), ("post_patch", "cb_post", 5), ("pre_unpatch", "cb_pre_un", 7),
        ("post_unpatch", "cb_post_un", 9)]
    assert all(r.is_callback and not r.is_function and r.scope is None for r in recs)


def test_callback_record_naming_two_functions_is_refused():
    raw = b"VZP1\0pre_patch\0a\0b\0\0x.c\0003\0"
    with pytest.raises(PatchFileError, match="callback record names a file or two functions"):
        parse_records(raw)


def test_wrong_callback_type_does_not_compile():
    with pytest.raises(RuntimeError, match="must be int"):
        T.build_patch([("bad.c", '#include "vzp.h"\nvoid f(void) { }\nVZP_PRE_PATCH(f)\n')], "cb-bad-type.so")


def test_generator_writes_callbacks_and_the_codec_keeps_them():
    so = T.build_patch([("cb.c", CALLBACKS_C)], "cb-gen.so")
    gen = generate(_target(), so)
    lp = gen.livepatch
    assert [c.kind for c in lp.callbacks] == ["pre_patch", "post_patch", "pre_unpatch", "post_unpatch"]
    img = ElfImage(so)
    for c in lp.callbacks:
        assert c.patch_value == next(s.value for s in img.symtab if s.name == c.name)
    assert [j.name for j in lp.func_jumps] == ["serve"]
    assert any("shadow region" in line for line in gen.explain) and lp.shadow_variables
    assert lp.required_features() == ["callbacks", "shadow"]
    back = LivePatch.from_bytes(lp.to_bytes())
    assert back.callbacks == lp.callbacks
    assert back.callback("post_unpatch").name == "cb_post_un"


@pytest.mark.parametrize("name, text, message", [
    ("undefined", 'int cb(void);\nVZP_PRE_PATCH(cb)\n', "not a function the patch defines"),
    ("twice", 'int a(void) { return 0; }\nint b(void) { return 0; }\nVZP_PRE_PATCH(a)\nVZP_PRE_PATCH(b)\n',
     "two pre_patch callbacks"),
    ("replacement", 'void serve_cb(void) { }\nVZP_POST_PATCH(serve_cb)\n'
     'int main(void) { return 0; }\nint cb(void) { return 0; }\nVZP_PRE_PATCH(main)\n',
     "pre_patch callback main .* has the name of a target function"),
])
def test_generator_refusals(name, text, message):
    so = T.build_patch([("r.c", '#include "vzp.h"\n' + SERVE_C + text)], "cb-refuse-%s.so" % name)
    with pytest.raises(GenerateError, match=message):
        generate(_target(), so)


@pytest.mark.parametrize("cb, problem", [
    (Callback("later", "f", 1), "unknown kind"),
    (Callback("pre_patch", "", 1), "invalid function name"),
])
def test_codec_refuses_bad_callbacks(cb, problem):
    lp = LivePatch("ab" * 20, "cd" * 20, callbacks=[cb])
    assert problem in lp.problem()
    lp = LivePatch("ab" * 20, "cd" * 20, callbacks=[Callback("pre_patch", "a", 1), Callback("pre_patch", "b", 2)])
    assert "two pre_patch" in lp.problem()


def test_shadow_layout_header_and_region_lookup():
    lay = shadow.layout()
    head = lay.header()
    assert len(head) == shadow.HEADER_SIZE
    magic, size, lock, bits, buckets, heap, top, live = struct.unpack_from("<QQIIQQQQ", head)
    assert head[:8] == b"PSBSHDW1" and magic == shadow.MAGIC
    assert (size, lock, bits, buckets) == (shadow.DEFAULT_SIZE, 0, shadow.DEFAULT_BUCKET_BITS, 256)
    assert heap == top == 256 + 8 * (1 << bits) and heap % 16 == 0 and live == 0
    with pytest.raises(ValueError):
        shadow.layout(8192, 14)
    ms = [Mapping(0x1000, 0x2000, 0, "r-xp", "/bin/x"),
          Mapping(0x7000, 0x9000, 0, "rw-p", "/memfd:nsb-shadow (deleted)")]
    assert shadow.region_in(ms) == (0x7000, 0x2000)
    assert shadow.region_in(ms[:1]) is None


def test_shadow_variables_are_read_back_from_the_table():
    lay = shadow.layout(1 << 20, 4)
    mem = bytearray(lay.size)
    mem[:shadow.HEADER_SIZE] = lay.header()
    # Two variables in one bucket chain, as the C code links them.
    b1, b2 = lay.heap, lay.heap + 64
    struct.pack_into("<QQQII", mem, b1, b2, 0x1234, 7, 0, 8)
    struct.pack_into("<QQQII", mem, b2, 0, 0x5678, 7, 1, 24)
    struct.pack_into("<Q", mem, lay.buckets + 8 * 3, b1)
    struct.pack_into("<Q", mem, 40, b2 + 64)  # top
    base = 0x10000

    def read(addr, n):
        return bytes(mem[addr - base:addr - base + n])
    got = shadow.variables(read, base)
    assert [(v.obj, v.id, v.size, v.data_addr) for v in got] == [
        (0x1234, 7, 8, base + b1 + 32), (0x5678, 7, 24, base + b2 + 32)]
    struct.pack_into("<Q", mem, b2, 8)  # a chain leaving the heap
    with pytest.raises(ValueError, match="leaves the heap"):
        shadow.variables(read, base)


# ---------------------------------------------------------------- lifecycle.callbacks: the verdicts



def _record():
    rec = PatchRecord("ab" * 20, "cd" * 20, "t", 0, 0x7000)
    rec.callbacks = [("pre_patch", 0x7100, "fix_pre"), ("post_unpatch", 0x7200, "fix_bye")]
    return rec


def test_recorded_callbacks_by_kind():
    rec = _record()
    assert cbl.recorded(rec, "pre_patch") == cbl.Call("pre_patch", 0x7100, "fix_pre")
    assert cbl.recorded(rec, "post_patch") is None
    assert cbl.recorded(rec, "pre_patch").returns_value and not cbl.recorded(rec, "post_unpatch").returns_value


def test_a_non_zero_pre_return_refuses_naming_callback_and_value():
    c = cbl.Call("pre_unpatch", 1, "guard")
    with pytest.raises(CallbackRefused) as e:
        cbl.judge(c, cbl.Result(returned=-22), 5, "revert of patch abc")
    assert type(e.value) is CallbackRefused and e.value.exit_code == 19
    assert str(e.value) == "pre-unpatch callback guard returned -22: revert of patch abc refused, nothing written"
    cbl.judge(c, cbl.Result(returned=0), 5, "revert")  # zero: go on
    cbl.judge(cbl.Call("post_patch", 1, "p"), cbl.Result(returned=None), 5, "apply")


@pytest.mark.parametrize("result, words", [
    (cbl.Result(timed_out=True), "timed out after 2 s"),
    (cbl.Result(signal="SIGSEGV"), "crashed (SIGSEGV"),
])
def test_timeout_and_crash_fail_with_their_own_message_and_state(result, words):
    c = cbl.Call("post_patch", 1, "fix_post")
    with pytest.raises(CallbackFailed) as e:
        cbl.judge(c, result, 2, "apply of patch abc")
    msg = str(e.value)
    assert e.value.exit_code == 19 and "\n" not in msg
    assert "post-patch callback fix_post " + words in msg and "the patch stays applied" in msg
    state = cbl.failed_state(c, result, 2)
    assert state.startswith("failed: post-patch callback fix_post " + words)
    rec = _record()
    rec.callback_state = state
    assert cbl.has_failed(rec) and not cbl.has_failed(_record())


def test_a_thread_inside_the_allocator_or_the_loader_is_not_borrowed():
    base_name, lock_holder = cbl.base_name, cbl.lock_holder
    assert [base_name(n) for n in ("__GI___libc_malloc", "_int_malloc", "___dlopen", "__libc_fork", "main")] == [
        "malloc", "int_malloc", "dlopen", "fork", "main"]
    # With libc's debug info (static functions named) and without (only exported names): found either way.
    assert lock_holder(["checked_request2size", "_int_malloc", "__GI___libc_malloc", "main"]) == "_int_malloc"
    assert lock_holder([None, "malloc", "main"]) == "malloc"
    assert lock_holder(["__GI___libc_read", "_IO_new_file_underflow", "main"]) is None
    assert lock_holder(["mallocate_things", "free_list_walk"]) is None  # whole names only
    assert lock_holder(["vzp__find", "vzp_shadow_get_or_alloc", "item_value"]) == "vzp_shadow_get_or_alloc"
