"""Live-patching Debian's own builds of real programs, as their maintainer would (issue 13 item 6).

Shared by tests/test_realprog_*.py and bench/run.py: the package built once (tests/debpkg.py),
patches compiled against the package's built source tree, ``nsb generate`` / ``patch`` / ``revert``
run through the standalone runner as users run them.
"""

import os
import shutil
import subprocess
import sys
import threading
import time

import pytest

import targets as T
import debpkg

ROOT = T.ROOT
FIXTURES = os.path.join(T.FIXTURES, "realprog")
NSB = [sys.executable, "-m", "gdb_nsb.standalone.cli"]


def package(name):
    """The package built as Debian builds it, or a skip naming why this machine cannot build it."""
    try:
        return debpkg.build(name)
    except debpkg.Unavailable as e:
        pytest.skip("%s: %s" % (name, e))


def fixture(*parts):
    with open(os.path.join(FIXTURES, *parts)) as f:
        return f.read()


def edited(path, old, new):
    """The text of source file ``path`` with the one occurrence of ``old`` replaced by ``new``."""
    with open(path) as f:
        text = f.read()
    assert text.count(old) == 1, "%s: %r occurs %d times" % (path, old, text.count(old))
    return text.replace(old, new)


def nsb_cmd(*args, timeout=600):
    """``nsb ARGS`` as users run it (bounded in time); the CompletedProcess."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run(NSB + [str(a) for a in args], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT, env=env)


def build_patch(pkg, name, text, flags=(), workdir=None):
    """A manual-mode patch ``name``.so from C ``text``: ``cc $(nsb cflags) FLAGS -shared``, with the
    package's built tree on the include path; copied into ``workdir`` (generate writes into it)."""
    so = T.build([(name + ".c", text)], T.PATCH_FLAGS + ["-I" + pkg.source] + list(flags),
                      name + ".so")
    if workdir is None:
        return so
    out = os.path.join(str(workdir), name + ".so")
    shutil.copyfile(so, out)
    return out


def build_unit(pkg, unit, text, flags, workdir, tag):
    """An auto-mode object: ``unit`` (a file name of the package's tree) with content ``text``, built
    ``cc $(nsb cflags) FLAGS -ffunction-sections -fdata-sections -c`` in ``workdir/tag/`` so its DWARF
    name is the unit's own.  Returns the object's path."""
    d = os.path.join(str(workdir), tag)
    os.makedirs(d, exist_ok=True)
    src = os.path.join(d, os.path.basename(unit))
    with open(src, "w") as f:
        f.write(text)
    obj = os.path.splitext(src)[0] + ".o"
    from gdb_nsb.standalone.cflags import patch_cflags  # what `nsb cflags` prints
    argv = ["gcc"] + patch_cflags() + ["-I" + os.path.join(pkg.source, os.path.dirname(unit)), "-I" + pkg.source] + \
        list(flags) + ["-ffunction-sections", "-fdata-sections", "-c", os.path.basename(src), "-o", obj]
    r = subprocess.run(argv, cwd=d, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, "%s\n%s" % (" ".join(argv), r.stderr)
    return obj


def auto_patch(pkg, unit, new_text, flags, workdir, name="auto"):
    """(patch .so, patched object, original object) for auto mode on ``unit`` edited to ``new_text``."""
    with open(os.path.join(pkg.source, unit)) as f:
        orig_text = f.read()
    orig = build_unit(pkg, unit, orig_text, flags, workdir, name + "-orig")
    new = build_unit(pkg, unit, new_text, flags, workdir, name + "-new")
    so = os.path.join(str(workdir), name + ".so")
    subprocess.run(["gcc", "-shared", new, "-o", so], check=True, timeout=120)
    return so, new, orig


def generate(pkg, target, so, *extra):
    """``nsb generate TARGET SO EXTRA... --debug-dir <the package's usr/lib/debug>``."""
    return nsb_cmd("generate", target, so, *extra, "--debug-dir", pkg.debug_dir)


# ---------------------------------------------------------------------- the programs and their edits

def target(pkg):
    """The ELF file patched in each package: memcached's server, sqlite3's library."""
    if pkg.info["package"] == "memcached":
        return pkg.path("usr/bin/memcached")
    libdir = os.path.join(pkg.root, "usr", "lib")
    for dirpath, _dirs, files in os.walk(libdir):
        for f in files:
            if f.startswith("libsqlite3.so.0.") and not os.path.islink(os.path.join(dirpath, f)):
                return os.path.join(dirpath, f)
    raise FileNotFoundError("no libsqlite3.so.0.* under %s" % libdir)


# An edit of a function the compiler inlined into several callers of its unit (Debian's -O2 build),
# per package: the unit, the function, the edit, and the functions holding an inlined copy of it.
INLINED = {
    # set_noreply_maybe ignores "noreply": every storage/arithmetic command answers.
    "memcached": {"unit": "proto_text.c", "function": "set_noreply_maybe",
                  "old": "        c->noreply = true;\n    }\n    return c->noreply;",
                  "new": "        c->noreply = false;\n    }\n    return c->noreply;",
                  "callers": ("process_arithmetic_command", "process_lru_command", "process_update_command",
                              "process_watch_command", "process_command_ascii")},
    # contextMalloc refuses results over 1000 bytes: upper(), lower(), hex() ... say "too big".
    "sqlite3": {"unit": "src/func.c", "function": "contextMalloc",
                "old": "  if( nByte>db->aLimit[SQLITE_LIMIT_LENGTH] ){\n    sqlite3_result_error_toobig",
                "new": "  if( nByte>db->aLimit[SQLITE_LIMIT_LENGTH] || nByte>1000 ){\n    sqlite3_result_error_toobig",
                "callers": ("hexFunc", "lowerFunc", "randomBlob", "replaceFunc", "trimFunc", "upperFunc")},
}


def inlined_args(pkg, workdir):
    """(patch .so, ``nsb generate`` arguments) for the package's INLINED edit in auto mode."""
    e = INLINED[pkg.info["package"]]
    return auto_args(pkg, workdir, e["unit"], e["old"], e["new"], "auto-" + e["function"])


def auto_args(pkg, workdir, unit, old, new, name):
    """(patch .so, ``nsb generate`` arguments) of auto mode on ``unit`` with ``old`` replaced by ``new``."""
    text = edited(os.path.join(pkg.source, unit), old, new)
    so, obj, orig = auto_patch(pkg, unit, text, pkg.unit_flags(unit), workdir, name)
    return so, ["generate", target(pkg), so, obj, "--mode", "auto", "--original", orig, "--debug-dir", pkg.debug_dir]


def auto_edit(pkg, workdir, unit, old, new, name):
    """(patch .so, ``nsb generate --explain`` result) of that auto-mode patch."""
    so, args = auto_args(pkg, workdir, unit, old, new, name)
    return so, nsb_cmd(*args, "--explain")


class Traffic:
    """A thread using the program from outside all the time while a test patches it; every answer checked.

    A program's traffic gives ``one_round()`` (None when the answer was right, else what was wrong) and
    may open its connection in ``connect()`` and close it in ``close()``.  ``check(at_least)``: no wrong
    answer, no error, and at least that many rounds."""

    join_seconds = 30

    def __init__(self):
        self.errors, self.rounds = [], 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def connect(self):
        pass

    def close(self):
        pass

    def one_round(self):
        raise NotImplementedError

    def _run(self):
        try:
            self.connect()
            while not self.stop.is_set():
                wrong = self.one_round()
                if wrong is not None:
                    self.errors.append(wrong)
                    return
                self.rounds += 1
        except (OSError, EOFError) as e:  # TimeoutError is an OSError
            self.errors.append(repr(e))
        finally:
            self.close()

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(self.join_seconds)
        return False

    def check(self, at_least=1):
        assert not self.errors, self.errors
        assert self.rounds >= at_least, "the traffic made %d rounds" % self.rounds


def apply_and_revert(pid, so, traffic, before, during, check_apply=None, settle=0.2):
    """Patch process ``pid`` with ``so`` while ``traffic`` (a Traffic) runs, then revert it.

    ``before()`` holds before the patch and after the revert, ``during()`` in between;
    ``check_apply(run)`` looks at the patch's result; the traffic must go on past the revert."""
    before()
    with traffic:
        run = T.nsb("patch", "-p", pid, "-f", so, "--json", "--timeout", 300)
        assert run.returncode == 0, run.doc
        if check_apply is not None:
            check_apply(run)
        during()
        rounds = traffic.rounds
        run = T.nsb("revert", "-p", pid, "-f", so, "--json", "--timeout", 300)
        assert run.returncode == 0, run.doc
        before()
        time.sleep(settle)
    traffic.check(at_least=rounds + 1)
