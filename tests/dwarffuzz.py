"""Randomized fuzzing of the DWARF decoder (gdb_nsb.elf.dwarf) on real debug files.

A seed file is a test program's separate debug file (``objcopy --only-keep-debug``: small, and
the symbol table that narrows lookups is kept).  A mutation rewrites bytes of one or more debug
sections only (flips, runs of 0x00/0xff/random bytes, copies from elsewhere in the section), so the
ELF structure stays valid and every failure is the decoder's.  Each input is opened with
DwarfIndex and asked the questions the generator asks; the outcome must be answers or a one-line
DebugInfoError.  Anything else (IndexError, KeyError, RecursionError, a hang) is a failure.

Used by tests/test_dwarf_fuzz.py (a fixed seed, and the regression corpus in tests/dwarf_corpus/)
and by tools/fuzz-dwarf (any seed and count; failing inputs are saved into that corpus).
"""

import gzip
import os
import random
import re
import shutil
import signal
import subprocess
import tempfile

import elf_fixtures as E
from gdb_nsb.elf.dwarf import DwarfIndex
from gdb_nsb.elf.image import ElfImage
from gdb_nsb.errors import DebugInfoError
import targets as T

CORPUS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dwarf_corpus")
SECTIONS = (".debug_info", ".debug_abbrev", ".debug_str", ".debug_line", ".debug_line_str", ".debug_rnglists",
            ".debug_ranges", ".debug_aranges", ".debug_addr", ".debug_str_offsets")
# Weighted towards the sections the hand-written decoder reads.
WEIGHTS = {".debug_info": 6, ".debug_abbrev": 3, ".debug_rnglists": 2, ".debug_ranges": 2, ".debug_aranges": 2}
HANG_SECONDS = 10


def seed_files():
    """{name: path} of the seed debug files (built and cached by cbuild)."""
    out = {}
    for name, path in (("prog5", E.build_prog("pie", 5)), ("prog4", E.build_prog("nopie", 4)),
                       ("lib5", E.build_lib(5))):
        dbg = path + ".fuzzseed.debug"
        if not os.path.exists(dbg) or os.path.getmtime(dbg) < os.path.getmtime(path):
            T.tool("objcopy", "--only-keep-debug", path, dbg + ".tmp")
            os.replace(dbg + ".tmp", dbg)
        out[name] = dbg
    return out


def debug_sections(path):
    """[(name, file offset, size)] of the uncompressed debug sections of ``path``."""
    img = ElfImage(path)
    return [(s.name, s.offset, s.size) for s in img.sections
            if s.name in SECTIONS and s.size and s.type != "SHT_NOBITS" and not s.flags & 0x800]


def mutate(data, secs, rng):
    """A copy of ``data`` with 1-8 random edits inside the debug sections ``secs``."""
    out = bytearray(data)
    weights = [WEIGHTS.get(n, 1) for n, _o, _s in secs]
    for _ in range(rng.randint(1, 8)):
        _name, off, size = rng.choices(secs, weights)[0]
        at = off + rng.randrange(size)
        n = min(rng.choice((1, 1, 1, 2, 4, 8, 16, 64)), off + size - at)
        kind = rng.randrange(5)
        if kind == 0:
            out[at] ^= 1 << rng.randrange(8)
        elif kind == 1:
            out[at:at + n] = bytes([rng.choice((0, 0xFF, 0x7F, 0x80))]) * n
        elif kind == 2:
            out[at:at + n] = rng.randbytes(n)
        elif kind == 3:
            src = off + rng.randrange(size)
            chunk = out[src:src + n]
            out[at:at + len(chunk)] = chunk
        else:  # a small integer (a length, an index, an offset) written over a field
            out[at:at + min(4, n)] = rng.randrange(1 << 32).to_bytes(4, "little")[:min(4, n)]
    return bytes(out)


def _alarm(_sig, _frame):
    raise TimeoutError("decoder hang (over %d s)" % HANG_SECONDS)


def exercise(path):
    """Open ``path`` with DwarfIndex and ask what the generator asks.

    Returns ("ok", "") or ("DebugInfoError", its message); raises whatever else escaped (the failure)."""
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(HANG_SECONDS)
    try:
        ix = DwarfIndex(path)
        cus = ix.compile_units()
        for c in cus:
            ix.find_cus(c.name or "x.c")
        for name in ("main", "f", "helper", "tick", "twice", "x_entry", "lib_entry", "lib_helper", "nosuch"):
            for fi in ix.functions(name):
                ix.function_at(fi.entry)
        ix.function_at(0x1000)
        for name, fn in (("counter", None), ("hits", "tick"), ("deep", None), ("table", None),
                         ("lib_counter", None), ("nosuch", None)):
            for vi in ix.variables(name, function=fn):
                ix.die(vi.die_offset)
        if cus:
            ix.functions("helper", cu=cus[-1])
        return "ok", ""
    except DebugInfoError as e:
        if "\n" in str(e):
            raise AssertionError("DebugInfoError is not one line: %r" % str(e)) from e
        return "DebugInfoError", str(e).replace(path, "FILE")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def run(seed, count, save_failures=False, log=print, save_each_error_kind=False):
    """Fuzz ``count`` inputs from ``seed``.  Returns [(description, exception)] of the failures.

    ``save_each_error_kind``: also save the first input giving each kind of DebugInfoError
    (how the regression corpus was started)."""
    rng = random.Random(seed)
    seeds = seed_files()
    prepared = [(name, path, open(path, "rb").read(), debug_sections(path)) for name, path in sorted(seeds.items())]
    failures = []
    outcomes = {"ok": 0, "DebugInfoError": 0}
    kinds = set()
    with tempfile.TemporaryDirectory(prefix="nsb-fuzz-dwarf-") as tmp:
        for i in range(count):
            name, _path, data, secs = rng.choice(prepared)
            blob = mutate(data, secs, rng)
            p = os.path.join(tmp, "input")
            with open(p, "wb") as f:
                f.write(blob)
            try:
                outcome, message = exercise(p)
                outcomes[outcome] += 1
                kind = re.sub(r"0x[0-9a-f]+|\d+", "N", message.split(" (")[0])
                if save_each_error_kind and message and kind not in kinds:
                    kinds.add(kind)
                    log("%s: saved as %s" % (kind, save(blob, "seed%d-%d-%s" % (seed, i, name))))
            except Exception as e:  # noqa: BLE001 - every other exception is the finding
                what = "seed %d input %d (%s): %s: %s" % (seed, i, name, type(e).__name__, e)
                failures.append((what, e))
                log("FAIL " + what)
                if save_failures:
                    log("  saved as " + save(blob, "seed%d-%d-%s" % (seed, i, name)))
    log("fuzz-dwarf seed %d: %d inputs, %d decoded, %d DebugInfoError, %d failures"
        % (seed, count, outcomes["ok"], outcomes["DebugInfoError"], len(failures)))
    return failures


def save(blob, stem):
    os.makedirs(CORPUS, exist_ok=True)
    dest = os.path.join(CORPUS, stem + ".debug.gz")
    with gzip.GzipFile(dest, "wb", mtime=0) as f:
        f.write(blob)
    return dest


def corpus():
    return sorted(os.path.join(CORPUS, n) for n in os.listdir(CORPUS) if n.endswith(".debug.gz")) \
        if os.path.isdir(CORPUS) else []


def exercise_corpus_file(gz, tmp):
    p = os.path.join(tmp, os.path.basename(gz)[:-3])
    with gzip.open(gz) as src, open(p, "wb") as dst:
        shutil.copyfileobj(src, dst)
    return exercise(p)[0]


def have_tools():
    return shutil.which("objcopy") is not None and subprocess.run(["gcc", "--version"], capture_output=True,
                                                                    timeout=30).returncode == 0
