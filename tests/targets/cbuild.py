"""Build what the tests run: C targets, patch .so files, and patches bound to a target.

Everything a test needs is built by the test from C source with the system
gcc, into a per-user cache directory, so that each source+flags pair is
compiled once even under pytest-xdist (a lock per build).
"""

import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
INCLUDE = os.path.join(ROOT, "gdb_nsb", "data")  # vzp.h
CACHE = os.environ.get("NSB_TEST_CACHE") or os.path.join(tempfile.gettempdir(), "nsb-test-cache-%d" % os.getuid())

# Flavors of target binaries (REFERENCE.md section 5).
FLAVOR_FLAGS = {
    "pie": ["-fPIE", "-pie"],
    "nopie": ["-fno-pie", "-no-pie"],
    "static": ["-static"],
    "static-pie": ["-static-pie", "-fPIE"],
}
PATCH_FLAGS = ["-O0", "-g", "-fPIC", "-shared", "-I" + INCLUDE]


def key(parts):
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode() if isinstance(p, str) else p)
        h.update(b"\0")
    return h.hexdigest()[:20]


def build(sources, flags=(), output_name="a.out", extra_inputs=(), env=None):
    """Compile ``sources`` (paths or (name, text) pairs) with gcc ``flags``.

    Returns the path of the output, cached by the content of sources and flags.
    Sources given as text are written into the build directory first, so their
    DW_AT_name is the plain file name and the directory is stable per content.
    """
    os.makedirs(CACHE, exist_ok=True)
    parts = [" ".join(flags), output_name]
    texts = []
    for s in sources:
        if isinstance(s, tuple):
            texts.append(s)
            parts += [s[0], s[1]]
        else:
            with open(s, "rb") as f:
                parts += [s, f.read()]
    for p in extra_inputs:
        parts.append(p)
    # Headers of ours that fixtures include (vzp.h) are part of the key too.
    for name in sorted(os.listdir(INCLUDE)):
        path = os.path.join(INCLUDE, name)
        if os.path.isfile(path):
            with open(path, "rb") as f:
                parts += [name, f.read()]
    digest = key(parts)
    outdir = os.path.join(CACHE, digest)
    out = os.path.join(outdir, output_name)
    os.makedirs(outdir, exist_ok=True)
    with open(os.path.join(CACHE, digest + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.exists(out):
            return out
        args = ["gcc"]
        for s in sources:
            if isinstance(s, tuple):
                name, text = s
                path = os.path.join(outdir, name)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "w") as f:
                    f.write(text)
                args.append(name)
            else:
                args.append(os.path.abspath(s))
        args += list(flags) + list(extra_inputs) + ["-o", output_name + ".tmp"]
        r = subprocess.run(args, cwd=outdir, capture_output=True, text=True, timeout=120, env=env)
        if r.returncode != 0:
            raise RuntimeError("gcc failed: %s\n%s" % (" ".join(args), r.stderr))
        os.rename(os.path.join(outdir, output_name + ".tmp"), out)
        return out


def build_patch(sources, output_name="patch.so", extra=()):
    """Build a patch .so the way users do: -O0 -g -fPIC -shared with vzp.h."""
    return build(sources, PATCH_FLAGS + list(extra), output_name)


def bind_patch(target, sources, name="patch.so", extra=(), workdir=None, **options):
    """The patch built from ``sources`` and bound to ``target`` (``nsb generate``'s manual mode).

    With ``workdir``: a fresh copy there, generated now (a test may damage or rename it).
    Without: generated once per (target, patch, options) into the cache, like a build.
    ``options`` go to ``generate_file``; its errors propagate.
    """
    from gdb_nsb.generator.manual import generate_file
    so = build_patch(sources, name, extra=extra)
    if workdir is not None:
        out = os.path.join(str(workdir), name)
        shutil.copyfile(so, out)
        generate_file(target, out, **options)
        return out
    digest = key([target, so] + ["%s=%r" % kv for kv in sorted(options.items())])
    outdir = os.path.join(CACHE, "gen-" + digest)
    out = os.path.join(outdir, name)
    os.makedirs(outdir, exist_ok=True)
    with open(os.path.join(CACHE, "gen-" + digest + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.path.exists(out):
            tmp = out + ".tmp"
            shutil.copyfile(so, tmp)
            generate_file(target, tmp, **options)
            os.rename(tmp, out)
    return out


# The reader thread of the FIFO targets (engine, fifo): blocked in read() inside wait_input(), called
# from reader_loop() (no patch replaces either); "got?" answers "got N LAST".  A target defines
# READER_STARTED() to run code when the thread starts, and sets ``fifo`` from argv before starting it.
FIFO_READER_C = r'''
#ifndef READER_STARTED
#define READER_STARTED()
#endif
static volatile long reads;
static char last[64] = "-";
static const char *fifo;

__attribute__((noinline)) static ssize_t wait_input(int fd, char *buf, size_t n)
{
    ssize_t r = read(fd, buf, n);
    __asm__ volatile("" ::: "memory"); /* keep the call a call, not a tail jump */
    return r;
}

__attribute__((noinline)) static void *reader_loop(void *arg)
{
    (void)arg;
    READER_STARTED();
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
'''


def tool(*args, cwd=None):
    """Run a binutils tool (nm, readelf) and return its stdout."""
    return subprocess.run(list(args), capture_output=True, text=True, check=True, timeout=60, cwd=cwd).stdout


class Flavor:
    """A built target: ``exe`` to run, ``target`` the object patches are for (exe or library)."""

    def __init__(self, name, exe, target):
        self.name = name
        self.exe = exe
        self.target = target


def build_flavor(name, target_c, main_c, stem, exe_flags, lib_flags, files=("target.c", "main.c"), lib_name=None):
    """A target program in flavor ``name``: pie, nopie, static or static-pie (one executable at -O2), O0
    (pie at -O0), shlib (the target unit a library at -O2, the main unit linked against it).

    ``exe_flags``/``lib_flags`` come without the optimization level; executables are named STEM-NAME."""
    target_file, main_file = files
    if name == "shlib":
        lib = build([(target_file, target_c)], ["-O2"] + list(lib_flags), lib_name or "lib%s.so" % stem)
        exe = build([(main_file, main_c)], ["-O2"] + list(exe_flags) + FLAVOR_FLAGS["pie"] +
                    ["-Wl,-rpath," + os.path.dirname(lib)], stem + "-shlib", extra_inputs=[lib])
        return Flavor(name, exe, lib)
    if name == "O0":
        level, link = "-O0", FLAVOR_FLAGS["pie"]
    elif name in FLAVOR_FLAGS:
        level, link = "-O2", FLAVOR_FLAGS[name]
    else:
        raise ValueError("unknown flavor %r" % name)
    exe = build([(target_file, target_c), (main_file, main_c)], [level] + list(exe_flags) + link,
                "%s-%s" % (stem, name))
    return Flavor(name, exe, exe)
