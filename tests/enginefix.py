"""Shared fixtures of the engine tests: target flavors, their live patches, a running target.

The target (PIE, non-PIE, static, a shared library used by a PIE executable,
and an -O0 PIE) has:

* ``compute()`` = ``base_value + 1`` (base_value is a target global set at
  start from the pid, so a patch bound to the wrong object shows a wrong
  value); four worker threads call ``compute()`` then sleep 200 us, and
  count every value outside ``base_value + 1 + {0, 100, 200, 300}``;
* ``parked(x)``, which a "parker" thread enters on request and stays in
  (sleeping) until released: a thread inside a replaced function;
* a reader thread blocked in ``read()`` on a FIFO inside ``wait_input()``,
  called from ``reader_loop()`` (neither is replaced by any patch).

Main thread commands on stdin: ``get`` -> ``value V``; ``stat`` -> ``calls C
unexpected U bad B seen N0 N100 N200 N300`` (worker calls per delta seen);
``park`` -> ``parked``; ``unpark`` -> ``unparked V``; ``got?`` -> ``got N LAST``.

Live patches (each generated once per target, cached like cbuild's builds):
``plus100`` / ``plus200`` (compute + 100 / + 200), ``ifunc`` (compute + 300
through ``strlen`` and ``memcpy`` of the target's ``label`` "abc"),
``parked`` (replaces parked()).
"""

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import cbuild
from gdbharness import Target, read_mem

ROOT = cbuild.ROOT

TARGET_C = r'''
#include <string.h>
#include <unistd.h>
int base_value = 1000;
char label[16] = "abc";
volatile int park_request, parked_inside;

/* No parameter: at -O0, `break compute` then lands right after `push rbp; mov rbp,rsp`,
   inside the 5 bytes of a jump. */
__attribute__((noinline)) int compute(void)
{
    return base_value + 1;
}

__attribute__((noinline)) int parked(int x)
{
    parked_inside = 1;
    while (park_request)
        usleep(1000);
    parked_inside = 0;
    return base_value + x;
}
'''

MAIN_C = r'''
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

extern int base_value;
extern volatile int park_request, parked_inside;
int compute(void);
int parked(int x);

#define WORKERS 4
static volatile long calls[WORKERS], unexpected, last_bad, reads, park_result, seen[4];
static char last[64] = "-";
static const char *fifo;

static void *worker(void *arg)
{
    long id = (long)arg;
    struct timespec pause = {0, 200 * 1000};
    for (;;) {
        int d = compute() - base_value - 1;
        if (d != 0 && d != 100 && d != 200 && d != 300) {
            __atomic_add_fetch(&unexpected, 1, __ATOMIC_SEQ_CST);
            last_bad = d + base_value + 1;
        } else {
            __atomic_add_fetch(&seen[d / 100], 1, __ATOMIC_RELAXED);
        }
        calls[id]++;
        nanosleep(&pause, NULL);
    }
    return NULL;
}

static void *parker(void *arg)
{
    (void)arg;
    for (;;) {
        if (park_request)
            park_result = parked(1);
        usleep(1000);
    }
    return NULL;
}

__attribute__((noinline)) static ssize_t wait_input(int fd, char *buf, size_t n)
{
    ssize_t r = read(fd, buf, n);
    __asm__ volatile("" ::: "memory"); /* keep the call a call, not a tail jump */
    return r;
}

__attribute__((noinline)) static void *reader_loop(void *arg)
{
    (void)arg;
    int fd = open(fifo, O_RDWR);
    if (fd < 0) { perror("open fifo"); exit(2); }
    for (;;) {
        char buf[64];
        ssize_t n = wait_input(fd, buf, sizeof buf - 1);
        if (n < 0) { printf("read-error %d\n", errno); fflush(stdout); exit(3); }
        if (n == 0) continue;
        buf[n] = 0;
        if (buf[n - 1] == '\n') buf[n - 1] = 0;
        snprintf(last, sizeof last, "%s", buf);
        __atomic_add_fetch(&reads, 1, __ATOMIC_SEQ_CST);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    pthread_t t;
    fifo = argv[1];
    base_value = 1000 + (getpid() % 9973) * 1000;
    for (long i = 0; i < WORKERS; i++)
        pthread_create(&t, NULL, worker, (void *)i);
    pthread_create(&t, NULL, parker, NULL);
    pthread_create(&t, NULL, reader_loop, NULL);
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("ready base %d\n", base_value);
    char line[128];
    while (fgets(line, sizeof line, stdin)) {
        if (!strncmp(line, "get", 3)) {
            printf("value %d\n", compute());
        } else if (!strncmp(line, "stat", 4)) {
            long c = 0;
            for (int i = 0; i < WORKERS; i++) c += calls[i];
            printf("calls %ld unexpected %ld bad %ld seen %ld %ld %ld %ld\n", c, unexpected, last_bad,
                   seen[0], seen[1], seen[2], seen[3]);
        } else if (!strncmp(line, "park", 4)) {
            park_request = 1;
            while (!parked_inside) usleep(1000);
            printf("parked\n");
        } else if (!strncmp(line, "unpark", 6)) {
            park_request = 0;
            while (parked_inside) usleep(1000);
            usleep(5000);
            printf("unparked %ld\n", park_result);
        } else if (!strncmp(line, "got?", 4)) {
            printf("got %ld %s\n", reads, last);
        } else {
            printf("pong\n");
        }
    }
    return 0;
}
'''

PATCHES = {
    "plus100": ("extern int base_value;\n"
                "int compute(void) { return base_value + 1 + 100; }\n", ()),
    "plus200": ("extern int base_value;\n"
                "int compute(void) { return base_value + 1 + 200; }\n", ()),
    # -fno-builtin: real calls to strlen/memcpy (IFUNCs in glibc), never inlined.
    "ifunc": ("#include <string.h>\n"
              "extern int base_value;\n"
              "extern char label[];\n"
              "int compute(void)\n"
              "{\n"
              "    char buf[16];\n"
              "    size_t n = strlen(label);\n"
              "    memcpy(buf, label, n + 1);\n"
              "    return base_value + 1 + 100 * (int)strlen(buf);\n"
              "}\n", ("-fno-builtin",)),
    "parked": ("#include <unistd.h>\n"
               "extern int base_value;\n"
               "extern volatile int park_request, parked_inside;\n"
               "int parked(int x)\n"
               "{\n"
               "    parked_inside = 1;\n"
               "    while (park_request)\n"
               "        usleep(1000);\n"
               "    parked_inside = 0;\n"
               "    return base_value + x + 100;\n"
               "}\n", ()),
}
DELTA = {"plus100": 100, "plus200": 200, "ifunc": 300, "parked": 0}

EXE_FLAGS = ["-g", "-pthread"]
FLAVORS = ("pie", "nopie", "static", "shlib", "O0")


class Flavor:
    """A built target: ``exe`` to run, ``target`` the object patches are for (exe or library)."""

    def __init__(self, name, exe, target):
        self.name = name
        self.exe = exe
        self.target = target


def build_flavor(name):
    sources = [("target.c", TARGET_C), ("main.c", MAIN_C)]
    if name in ("pie", "nopie", "static"):
        exe = cbuild.build(sources, ["-O2"] + EXE_FLAGS + cbuild.FLAVOR_FLAGS[name], "target-" + name)
        return Flavor(name, exe, exe)
    if name == "O0":
        exe = cbuild.build(sources, ["-O0"] + EXE_FLAGS + cbuild.FLAVOR_FLAGS["pie"], "target-O0")
        return Flavor(name, exe, exe)
    if name == "shlib":
        lib = cbuild.build([("target.c", TARGET_C)], ["-O2", "-g", "-fPIC", "-shared"], "libnsbt.so")
        exe = cbuild.build([("main.c", MAIN_C)], ["-O2"] + EXE_FLAGS + cbuild.FLAVOR_FLAGS["pie"] +
                           ["-Wl,-rpath," + os.path.dirname(lib)], "target-shlib", extra_inputs=[lib])
        return Flavor(name, exe, lib)
    raise ValueError("unknown flavor %r" % name)


def patch_for(flavor, patch):
    """The live patch ``patch`` bound to ``flavor``'s target (built and generated once, cached)."""
    from gdb_nsb.generator.manual import generate_file
    text, extra = PATCHES[patch]
    so = cbuild.build_patch([(patch + ".c", text)], patch + ".so", extra=list(extra))
    key = cbuild._key([flavor.target, so])
    outdir = os.path.join(cbuild.CACHE, "gen-" + key)
    out = os.path.join(outdir, "%s-%s.so" % (patch, flavor.name))
    os.makedirs(outdir, exist_ok=True)
    with open(os.path.join(cbuild.CACHE, "gen-" + key + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.path.exists(out):
            tmp = out + ".tmp"
            shutil.copyfile(so, tmp)
            generate_file(flavor.target, tmp)
            os.rename(tmp, out)
    return out


class Running(Target):
    """The target of a flavor, started with its FIFO; ``value()``, ``stats()``, ``feed()``."""

    def __init__(self, flavor, tmp_path):
        self.flavor = flavor
        self.fifo = os.path.join(str(tmp_path), "input.fifo")
        if not os.path.exists(self.fifo):
            os.mkfifo(self.fifo)
        super().__init__([flavor.exe, self.fifo], ready_line="ready base", timeout=20)
        self.base = None

    def __enter__(self):
        super().__enter__()
        # Target.__enter__ consumed the ready line; the base is in /proc via a "get" instead.
        self.base = self.value() - 1
        return self

    def value(self):
        line = self.ask("get")
        assert line.startswith("value "), line
        return int(line.split()[1])

    def stats(self):
        parts = self.ask("stat").split()
        return {"calls": int(parts[1]), "unexpected": int(parts[3]), "bad": int(parts[5]),
                "seen": {100 * i: int(v) for i, v in enumerate(parts[7:11])}}

    def expect(self, delta):
        """The value compute() gives with the layer of ``delta`` on top."""
        return self.base + 1 + delta

    def feed(self, text):
        fd = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)
        try:
            os.write(fd, (text + "\n").encode())
        finally:
            os.close(fd)

    def wait_calls(self, more=200, timeout=5.0):
        """Let the workers run at least ``more`` further calls (they run through every step)."""
        start = self.stats()["calls"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            s = self.stats()
            if s["calls"] >= start + more:
                return s
            time.sleep(0.01)
        raise AssertionError("workers stalled: %d calls in %.1fs" % (self.stats()["calls"] - start, timeout))


# ---------------------------------------------------------------------------- runner and memory helpers

def nsb(command, pid, *args, timeout=90):
    """Run ``nsb COMMAND -p PID ARGS... --json`` (the standalone runner); returns (exit code, process doc)."""
    argv = [sys.executable, "-m", "gdb_nsb.standalone.cli", command, "-p", str(pid), "--json",
            "--timeout", str(timeout)] + [str(a) for a in args]
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                         start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout + 30)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        raise TimeoutError("nsb %s overran: %s %s" % (command, out, err))
    try:
        doc = json.loads(out)
    except ValueError:
        raise AssertionError("nsb %s printed no JSON (rc %d): %s\n%s" % (command, p.returncode, out, err))
    proc = doc["processes"][0]
    assert doc["exit_code"] == p.returncode, (doc, p.returncode)
    return p.returncode, proc


def maps_lines(pid):
    with open("/proc/%d/maps" % pid) as f:
        return f.read().splitlines()


def load_bias(pid, path):
    """Load bias of ``path`` in ``pid`` from /proc/PID/maps: start of its offset-0 mapping minus its first vaddr."""
    from gdb_nsb.elf.image import ElfImage
    image = ElfImage(path)
    if image.elf_type == "ET_EXEC":
        return 0
    real = os.path.realpath(path)
    for line in maps_lines(pid):
        parts = line.split(None, 5)
        if len(parts) == 6 and parts[5] == real and int(parts[2], 16) == 0:
            lo = min(s.vaddr for s in image.segments) & ~0xfff
            return int(parts[0].split("-")[0], 16) - lo
    raise AssertionError("%s is not mapped in %d" % (path, pid))


def function_bytes(path, name):
    """(link-time address, file bytes) of function ``name`` in ``path``."""
    from gdb_nsb.elf.image import ElfImage
    image = ElfImage(path)
    sym = next(s for s in image.symbols_named(name) if s.type == "STT_FUNC" and s.size)
    return sym.value, image.read_vaddr(sym.value, sym.size)


def memory_matches_file(pid, path, name):
    """(in-memory bytes, file bytes) of function ``name`` of ``path`` in ``pid``."""
    vaddr, want = function_bytes(path, name)
    return read_mem(pid, load_bias(pid, path) + vaddr, len(want)), want
