"""The runner's fast attach (gdb_nsb/process/fastattach.py) never costs safety.

A thread parked in read() called from a replaced function must still make
`nsb patch` fail safe (busy, process untouched) when separate debug files are
skipped and the executable's symbols are loaded before attaching; a patch of
a function no thread is in applies and reverts.
"""

import os
import shutil
import subprocess
import sys
import tempfile

import pytest

import targets as T
from gdb_nsb.elf.headers import is_elf_file
from targets import ROOT, Target, read_mem, wait_running

pytestmark = pytest.mark.timeout(240)

SRC = r'''
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>
int fds[2];
__attribute__((noinline)) long reader_fn(void) { char c = 0; long n = read(fds[0], &c, 1); return n + c; }
__attribute__((noinline)) long idle_fn(long x) { return x * 3 + 1; }
long (*volatile idle_ptr)(long) = idle_fn;
static void *worker(void *a) { (void)a; for (;;) reader_fn(); return 0; }
int main(void) {
  if (pipe(fds)) return 1;
  pthread_t t; pthread_create(&t, 0, worker, 0);
  printf("ready\n"); fflush(stdout);
  char buf[64];
  while (fgets(buf, sizeof buf, stdin)) { printf("%ld\n", idle_ptr(5)); fflush(stdout); }
  return 0;
}
'''

PATCH_READER = "long reader_fn(void) { return 42; }\n"
PATCH_IDLE = "long idle_fn(long x) { return x * 3 + 1000; }\n"


def _build():
    return T.build([("fa_target.c", SRC)], ["-O2", "-g", "-flive-patching=inline-clone", "-pthread"], "fa_target")


def _patch(exe, name, text, d):
    return T.bind_patch(exe, [(name + ".c", text)], name + ".so", workdir=d)


@pytest.fixture
def gdbless_fastattach(monkeypatch):
    with T.without_gdb(monkeypatch, "gdb_nsb.process.fastattach") as module:
        yield module


def test_plan_and_section_reader(gdbless_fastattach, tmp_path):
    fa = gdbless_fastattach
    exe = _build()
    names = fa.section_names(exe)
    assert ".eh_frame" in names and ".debug_info" in names and ".text" in names
    assert fa.section_names(str(tmp_path / "missing")) is None
    with Target([exe], ready_line="ready") as t:
        decided = fa.plan(t.pid)
        assert decided["exe"] == os.path.realpath(exe)
        assert decided["images"] >= 2
        from gdb_nsb.process import filecache
        libc = next(p for p in filecache.mapped_files(t.pid) if "libc.so" in p)
        has_frame = any(os.path.exists(c) and ".debug_frame" in (fa.section_names(c) or [])
                        for c in fa.debug_file_candidates(filecache.image(libc)))
        assert decided["skip_debug_files"] == (not has_frame)


def test_separate_debug_file_with_unwind_tables_is_never_skipped(gdbless_fastattach, tmp_path):
    fa = gdbless_fastattach
    # CFI only in .debug_frame, then moved to a separate debug file: that file must be read.
    lib = T.build([("noeh.c", "int noeh(int x) { return x + 1; }\n")],
                       ["-O2", "-g", "-fPIC", "-shared", "-fno-asynchronous-unwind-tables", "-fno-unwind-tables"],
                       "libnoeh.so")
    assert ".debug_frame" in fa.section_names(lib)
    debug, stripped = str(tmp_path / "libnoeh.debug"), str(tmp_path / "libnoeh.so")
    subprocess.run(["objcopy", "--only-keep-debug", lib, debug], check=True, timeout=60)
    subprocess.run(["objcopy", "--strip-debug", "--add-gnu-debuglink=" + debug, lib, stripped], check=True,
                   timeout=60)
    assert ".debug_frame" not in fa.section_names(stripped)
    from gdb_nsb.process import filecache
    assert fa._separate_unwind_tables(filecache.image(stripped))
    assert not fa._separate_unwind_tables(filecache.image(lib))


def test_parked_read_in_replaced_function_fails_safe_then_other_patch_applies():
    exe = _build()
    d = tempfile.mkdtemp(prefix="nsb-fa-")
    try:
        busy_patch = _patch(exe, "reader", PATCH_READER, d)
        idle_patch = _patch(exe, "idle", PATCH_IDLE, d)
        with Target([exe], ready_line="ready") as t:
            assert t.ask("x") == "16"
            entry = T.load_bias(t.pid, exe) + T.function_symbol(exe, "reader_fn").value
            before = read_mem(t.pid, entry, 16)
            r = T.nsb("patch", "-p", t.pid, "-f", busy_patch, "--retries", "3", "--timeout", "60")
            assert r.returncode == 3, (r.returncode, r.stdout, r.stderr)
            assert "reader_fn" in (r.stdout + r.stderr)
            assert read_mem(t.pid, entry, 16) == before
            assert wait_running(t.pid)
            r = T.nsb("patch", "-p", t.pid, "-f", idle_patch)
            assert r.returncode == 0, (r.stdout, r.stderr)
            assert t.ask("x") == "1015"
            r = T.nsb("revert", "-p", t.pid, "-f", idle_patch)
            assert r.returncode == 0, (r.stdout, r.stderr)
            assert t.ask("x") == "16"
            assert wait_running(t.pid)
    finally:
        shutil.rmtree(d, ignore_errors=True)


DATA_MAPPER = r'''
#include <fcntl.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>
int main(int argc, char **argv) {
  int fd = open(argv[1], O_RDONLY);
  if (fd < 0 || mmap(0, 4096, PROT_READ, MAP_SHARED, fd, 0) == MAP_FAILED) return 1;
  printf("ready\n"); fflush(stdout);
  char buf[64];
  while (fgets(buf, sizeof buf, stdin)) {}
  return 0;
}
'''


def test_mapped_data_files_do_not_disable_the_fast_path(gdbless_fastattach, tmp_path):
    """A process mapping a data file (a database, a locale archive) keeps the fast attach: GDB reads no
    symbols from such files, so they do not count; only ELF objects decide."""
    fa = gdbless_fastattach
    exe = T.build([("fa_mapper.c", DATA_MAPPER)], ["-O2", "-g"], "fa_mapper")
    data = tmp_path / "table.db"
    data.write_bytes(b"SQLite format 3\0" + b"\1" * 8192)
    with Target([exe, str(data)], ready_line="ready") as t:
        from gdb_nsb.process import filecache
        assert str(data) in filecache.mapped_files(t.pid)
        decided = fa.plan(t.pid)
        libc = next(p for p in filecache.mapped_files(t.pid) if "libc.so" in p)
        has_frame = any(os.path.exists(c) and ".debug_frame" in (fa.section_names(c) or [])
                        for c in fa.debug_file_candidates(filecache.image(libc)))
        assert decided["skip_debug_files"] == (not has_frame)
    # An unreadable mapped object still turns the fast path off (GDB would do its usual reading).
    assert is_elf_file(str(tmp_path / "gone")) is None
    assert is_elf_file(str(data)) is False and is_elf_file(exe) is True


def test_a_huge_data_file_is_refused_without_reading_it(tmp_path):
    """ElfImage reads the header first: a mapped multi-GiB data file costs no memory in the prefetch."""
    big = tmp_path / "huge.bin"
    with open(big, "wb") as f:
        f.truncate(4 << 30)  # sparse: 4 GiB of zeros
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30));"
            "from gdb_nsb.elf.image import ElfImage; from gdb_nsb.errors import ElfError\n"
            "try:\n    ElfImage(sys.argv[1])\nexcept ElfError as e:\n    print(e)\n")
    r = subprocess.run([sys.executable, "-c", code, str(big)], cwd=ROOT, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "%s: not an ELF file" % big
