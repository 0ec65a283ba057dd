"""nsb generate refuses, with one line naming the symbol and the patch
source line, everything it cannot bind exactly once; and it finds separate
debug files, regenerates idempotently, and runs from the command line."""

import os
import shutil
import subprocess

import pytest

import gen_oracle as G
import targets as T
from gdb_nsb.elf.image import ElfImage
from gdb_nsb.elf.livepatch import LivePatch
from gdb_nsb.errors import DebugInfoError, GenerateError
from gdb_nsb.generator import generate, generate_file
from gdb_nsb.standalone import cli

pytestmark = pytest.mark.timeout(300)

HEAD = '#include "vzp.h"\n'
GOOD_FN = "int compute(int x) { return x + 1; }\n"


def _patch(name, text, extra=()):
    return G.build_patch([(name, HEAD + text)], name.replace(".c", ".so"), extra=extra)


@pytest.fixture(scope="module")
def pie():
    return G.build_target("pie")


def test_unknown_static(pie):
    p = _patch("unknown.c", 'VZP_FILE("alpha.c");\nVZP_STATIC_VAR_REF(int, no_such_var);\n'
                            "int compute(int x) { return x + no_such_var; }\n")
    msg = G.refused(pie, p)
    assert "no_such_var" in msg and "unknown.c:3" in msg and "not found" in msg and "alpha.c" in msg


def test_unknown_file(pie):
    p = _patch("nofile.c", 'VZP_STATIC_VAR_REF(int, counter, "gamma.c");\n'
                           "int compute(int x) { return x + counter; }\n")
    msg = G.refused(pie, p)
    assert "gamma.c" in msg and "nofile.c:2" in msg and "no compile unit" in msg


def test_unknown_hidden(pie):
    p = _patch("nohidden.c", "VZP_HIDDEN_VAR_REF(int, shared_total);\n"
                             "int compute(int x) { return x + shared_total; }\n")
    msg = G.refused(pie, p)
    # shared_total exists but is a default-visibility global: named with what the target has.
    assert "hidden shared_total" in msg and "nohidden.c:2" in msg and "default" in msg


def test_ambiguous_static_variable(pie):
    p = _patch("ambig.c", "VZP_STATIC_VAR_REF(int, counter);\nint compute(int x) { return x + counter; }\n")
    msg = G.refused(pie, p)
    assert "ambiguous" in msg and "counter" in msg and "ambig.c:2" in msg
    assert "alpha.c" in msg and "beta.c" in msg


def test_ambiguous_static_function_replacement(pie):
    p = _patch("ambigfn.c", "static __attribute__((used)) int bump(int x) { return x; }\n" + GOOD_FN)
    msg = G.refused(pie, p)
    assert "bump" in msg and "ambigfn.c:2" in msg and "alpha.c" in msg and "beta.c" in msg


def test_context_without_that_static(pie):
    p = _patch("wrongctx.c", 'VZP_FILE("main.c");\nstatic __attribute__((used)) int bump(int x) { return x; }\n'
               + GOOD_FN)
    msg = G.refused(pie, p)
    assert "bump" in msg and "main.c" in msg and "wrongctx.c:3" in msg


def test_same_c_name_for_two_local_statics(pie):
    # Block-scope externs of one name share linkage: the second `calls` would
    # silently mean tick_alpha's.  Refused; the fixture shows the alias form.
    p = _patch("twocalls.c",
               "int tick_alpha(void) { VZP_STATIC_VAR_REF(int, calls); return ++calls; }\n"
               "int tick_common(void) { VZP_STATIC_VAR_REF(int, calls); return ++calls; }\n")
    msg = G.refused(pie, p)
    assert "calls" in msg and "twocalls.c:2" in msg and "VZP_STATIC_SYM_ALIAS" in msg


def test_local_static_in_helper(pie):
    p = _patch("helperlocal.c", "int brand_new(void) { VZP_STATIC_VAR_REF(int, calls); return calls; }\n"
               + GOOD_FN)
    msg = G.refused(pie, p)
    assert "calls" in msg and "brand_new" in msg and "helperlocal.c:2" in msg


def test_writable_data(pie):
    p = _patch("writable.c", "int patch_state = 3;\nstatic int cache;\n"
                             "int compute(int x) { cache += x; return patch_state + cache; }\n")
    msg = G.refused(pie, p)
    assert "writable data" in msg
    assert "patch_state (" in msg and "writable.c:2" in msg
    assert "cache (" in msg and "writable.c:3" in msg


def test_writable_function_local_static(pie):
    p = _patch("wlocal.c", "int compute(int x) { static int seen; return seen += x; }\n")
    msg = G.refused(pie, p)
    assert "writable data" in msg and "seen" in msg and "wlocal.c:2" in msg


def test_read_only_data_is_fine(pie, tmp_path):
    p = _patch("rodata.c", 'static const char *const names[] = {"a", "b"};\nstatic const int table[] = {1, 2};\n'
                           "int compute(int x) { return names[x & 1][0] + table[x & 1]; }\n")
    assert len(generate(pie, p).livepatch.func_jumps) == 1


def test_too_short_function(pie):
    p = _patch("short.c", "int tiny(void) { return 1; }\n" + GOOD_FN)
    msg = G.refused(pie, p)
    tiny = G.nm_one(G.nm(pie), "tiny")
    assert tiny.size < 5
    assert "tiny" in msg and "short.c:2" in msg and "too short" in msg and "%d bytes" % tiny.size in msg


def test_no_functions_to_patch(pie):
    p = _patch("nofn.c", "int brand_new(int x) { return x * 7; }\n")
    msg = G.refused(pie, p)
    assert "no functions to patch" in msg


def test_target_without_debug_info(tmp_path):
    t = G.build_target("pie", debug=False)
    p = _patch("ok.c", GOOD_FN)
    msg = G.refused(t, p, DebugInfoError, debug_dirs=[str(tmp_path)])
    assert "no debug information" in msg and t in msg


def test_target_without_build_id():
    t = G.build_target("pie", extra=["-Wl,--build-id=none"])
    msg = G.refused(t, _patch("ok.c", GOOD_FN))
    assert "build-id" in msg and t in msg


def test_patch_without_build_id(pie):
    p = _patch("nobid.c", GOOD_FN, extra=["-Wl,--build-id=none"])
    msg = G.refused(pie, p)
    assert "build-id" in msg and "patch" in msg


def test_patch_without_dwarf(pie):
    p = _patch("nodwarf.c", GOOD_FN, extra=["-g0"])
    msg = G.refused(pie, p, DebugInfoError)
    assert "DWARF" in msg and "nsb cflags" in msg


def test_patch_not_a_shared_object(pie):
    msg = G.refused(pie, G.build_target("pie"))
    assert "not a shared object" in msg


# ---- separate debug files ---------------------------------------------------------------


def _signature(lp):
    return (lp.old_bid, [(j.name, j.func_value, j.func_size, j.patch_value, j.shndx, j.fragments, j.entry_bytes)
                         for j in lp.func_jumps], lp.manual_symbols, lp.global_symbols)


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    """(full target, stripped copy, its debug file, patch)."""
    d = tmp_path_factory.mktemp("split")
    full = G.build_target("pie")
    stripped = str(d / "gen-stripped")
    debug = str(d / "gen.debug")
    subprocess.run(["objcopy", "--only-keep-debug", full, debug], check=True, timeout=60)
    subprocess.run(["strip", "--strip-all", "-o", stripped, full], check=True, timeout=60)
    patch = G.build_patch(["patch_all.c", "patch_statics.c"], "patch-all.so")
    return full, stripped, debug, patch


def test_stripped_target_with_debug_file(split, tmp_path):
    full, stripped, debug, patch = split
    assert T.tool("readelf", "-S", stripped).count(".symtab") == 0
    want = generate(full, patch).livepatch
    got = generate(stripped, patch, debug_file=debug).livepatch
    assert _signature(got) == _signature(want)


def test_stripped_target_by_build_id_dir(split, tmp_path):
    full, stripped, debug, patch = split
    b = ElfImage(full).build_id
    os.makedirs(tmp_path / ".build-id" / b[:2])
    shutil.copyfile(debug, tmp_path / ".build-id" / b[:2] / (b[2:] + ".debug"))
    got = generate(stripped, patch, debug_dirs=[str(tmp_path)]).livepatch
    assert _signature(got) == _signature(generate(full, patch).livepatch)


def test_stripped_target_without_debug_file(split, tmp_path):
    _full, stripped, _debug, patch = split
    msg = G.refused(stripped, patch, DebugInfoError, debug_dirs=[str(tmp_path)])
    assert "no debug information" in msg and "--debug-file" in msg


def test_debug_file_of_another_build(split, tmp_path):
    _full, stripped, _debug, patch = split
    other = G.build_target("nopie")
    msg = G.refused(stripped, patch, DebugInfoError, debug_file=other)
    assert "build-id" in msg and other in msg


# ---- writing ---------------------------------------------------------------------------------


def test_regeneration_is_idempotent(pie, tmp_path):
    patch = G.copy(G.build_patch(["patch_all.c", "patch_statics.c"], "patch-all.so"), tmp_path)
    generate_file(pie, patch)
    with open(patch, "rb") as f:
        once = f.read()
    generate_file(pie, patch)
    with open(patch, "rb") as f:
        twice = f.read()
    assert once == twice
    assert LivePatch.read(patch).func_jumps


def test_output_file_gets_raw_section(pie, tmp_path):
    src = G.build_patch(["patch_all.c", "patch_statics.c"], "patch-all.so")
    patch = G.copy(src, tmp_path)
    out = str(tmp_path / "section.bin")
    gen = generate_file(pie, patch, out=out)
    with open(out, "rb") as f:
        assert LivePatch.from_bytes(f.read()) == gen.livepatch
    with open(patch, "rb") as a, open(src, "rb") as b:
        assert a.read() == b.read()  # the patch itself is untouched


# ---- command line ------------------------------------------------------------------------------


def test_cli_generate_explain(pie, tmp_path, capsys):
    patch = G.copy(G.build_patch(["patch_all.c", "patch_statics.c"], "patch-all.so"), tmp_path)
    assert cli.main(["generate", "--explain", pie, patch]) == 0
    out = capsys.readouterr().out.splitlines()
    assert any(line.startswith("function compute: target") for line in out)
    assert any(line.startswith("reference hidden_count (hidden_var") for line in out)
    assert any(line.startswith("global shared_total -> target") for line in out)
    assert any(line.startswith("helper new_helper") for line in out)
    assert LivePatch.read(patch).old_bid


def test_cli_refusal_exit_code(pie, capsys):
    p = _patch("ambig.c", "VZP_STATIC_VAR_REF(int, counter);\nint compute(int x) { return x + counter; }\n")
    assert cli.main(["generate", pie, p]) == GenerateError.exit_code
    err = capsys.readouterr().err.strip()
    assert err.startswith("nsb: ") and "ambiguous" in err and len(err.splitlines()) == 1


def test_cflags_build_a_patch_as_documented(tmp_path, pie):
    src = tmp_path / "fix.c"
    src.write_text(HEAD + GOOD_FN)
    nsb = [os.path.join(T.ROOT, ".venv", "bin", "python"), "-m", "gdb_nsb.standalone.cli"]
    flags = subprocess.run(nsb + ["cflags"], capture_output=True, text=True, timeout=60, check=True,
                           cwd=T.ROOT).stdout.split()
    assert flags[1:] == ["-O0", "-g", "-fPIC"] and os.path.isfile(os.path.join(flags[0][2:], "vzp.h"))
    link = subprocess.run(nsb + ["cflags", "--link"], capture_output=True, text=True, timeout=60, check=True,
                          cwd=T.ROOT).stdout.split()
    assert link == flags + ["-shared"]
    # cc $(nsb cflags) -shared fix.c -o fix.so
    subprocess.run(["gcc"] + flags + ["-shared", str(src), "-o", str(tmp_path / "fix.so")], check=True, timeout=60)
    generate_file(pie, str(tmp_path / "fix.so"))
    assert [j.name for j in LivePatch.read(str(tmp_path / "fix.so")).func_jumps] == ["compute"]


# ---- endbr64 (-fcf-protection) -----------------------------------------------------------------


def test_endbr64_entry_and_short_function():
    t = G.build_target("pie", extra=["-fcf-protection=full"])
    syms = G.nm(t)
    compute = G.nm_one(syms, "compute", "alpha.c")
    lp = generate(t, _patch("ok.c", GOOD_FN)).livepatch
    (j,) = lp.func_jumps
    # endbr64 is kept, the jump goes after it: 4 + 14 bytes are expected there.
    assert j.entry_bytes[:4] == b"\xf3\x0f\x1e\xfa"
    assert j.entry_bytes == G.file_bytes_at(t, compute.addr, 18)
    tiny = G.nm_one(syms, "tiny")
    assert G.file_bytes_at(t, tiny.addr, 4) == b"\xf3\x0f\x1e\xfa" and tiny.size - 4 < 5
    msg = G.refused(t, _patch("short.c", "int tiny(void) { return 1; }\n" + GOOD_FN))
    assert "tiny" in msg and "after endbr64" in msg and "short.c:2" in msg


def test_same_source_spellings():
    from gdb_nsb.generator.paths import same_source
    assert same_source("fix.c", "/build/patches/fix.c")
    assert same_source("./patches/fix.c", "/build/patches/fix.c")
    assert same_source("/a/fix.c", "/a/./fix.c")
    assert not same_source("/a/fix.c", "/b/fix.c")
    assert not same_source("other/fix.c", "/build/patches/fix.c")
    assert not same_source("xfix.c", "/build/patches/fix.c")
    assert not same_source("", "fix.c")
