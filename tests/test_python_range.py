"""The claimed Python range is true: under the oldest (3.9, RHEL 9's GDB) and the newest (3.13, Debian 13 and
Fedora 41) the pins of pyproject.toml install, and every gdb_nsb module imports, the `gdb` module stubbed.

Static checkers alone miss what fails only when Python runs the code (a `list | None` annotation in a
dataclass is evaluated when the class is made).  The Pythons come from pyenv; the venvs are cached under
~/.cache/nsb-pyrange, one per Python and set of pins (first run: about half a minute each)."""

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

import gen_oracle as G
import pythons
import targets as T
from gdb_nsb import loadcheck

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OLDEST, NEWEST = "3.9", "3.13"
CACHE = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "nsb-pyrange")

pytestmark = pytest.mark.timeout(600)

# Runs under the Python being checked: a `gdb` module in which every name is a class (so that
# `class X(gdb.Command)` and `gdb.PARAM_ENUM` work) and every attribute of those another one.
IMPORT_ALL = r'''
import importlib, pkgutil, sys, types, traceback

class _Meta(type):
    def __getattr__(cls, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Meta(name, (), {})

gdb = types.ModuleType("gdb")
gdb.__getattr__ = lambda name: _Meta(name, (), {})
gdb.__path__ = []
sys.modules["gdb"] = gdb
sys.path.insert(0, sys.argv[1])
import gdb_nsb
failed = []
names = ["gdb_nsb"] + [m.name for m in pkgutil.walk_packages(gdb_nsb.__path__, "gdb_nsb.")]
for name in names:
    if name == "gdb_nsb.gdb_main":
        continue  # importing it registers the commands inside GDB: not a definition to check
    try:
        importlib.import_module(name)
    except Exception:
        failed.append(name + ": " + traceback.format_exc().strip().splitlines()[-1])
print("python %d.%d" % sys.version_info[:2])
for f in failed:
    print("FAILED " + f)
for name in names:
    print("module " + name)
'''


def pins_for(version):
    with open(os.path.join(ROOT, "pyproject.toml")) as f:
        reqs = loadcheck.pyproject_requirements(f.read())
    return ["%s==%s" % p for p in loadcheck.pins(reqs, tuple(int(x) for x in version.split(".")))]


def cached_venv(python, version):
    """A venv of ``python`` holding ``version``'s pins, made once per set of pins (atomically, for
    parallel runs)."""
    pins = pins_for(version)
    key = hashlib.sha256(("%s\n%s" % (python, "\n".join(pins))).encode()).hexdigest()[:12]
    venv = os.path.join(CACHE, "py%s-%s" % (version, key))
    if os.path.exists(os.path.join(venv, ".complete")):
        return venv, pins
    os.makedirs(CACHE, exist_ok=True)
    with open(venv + ".lock", "w") as lock:  # one maker per venv; the others wait for it
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.path.exists(os.path.join(venv, ".complete")):
            _make_venv(python, version, pins, venv)
    return venv, pins


def _make_venv(python, version, pins, venv):
    tmp = tempfile.mkdtemp(prefix="py%s-" % version, dir=CACHE)
    try:
        subprocess.run([python, "-m", "venv", tmp], check=True, timeout=120, capture_output=True)
        r = subprocess.run([os.path.join(tmp, "bin", "python"), "-m", "pip", "install", "-q",
                            "--disable-pip-version-check"] + pins, capture_output=True, text=True, timeout=500)
        assert r.returncode == 0, "the pins do not install under Python %s:\n%s" % (version, r.stderr[-3000:])
        open(os.path.join(tmp, ".complete"), "w").close()
        shutil.rmtree(venv, ignore_errors=True)  # a half-made one from a killed run
        os.rename(tmp, venv)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def range_python(version):
    python = pythons.pyenv_pythons().get(version)
    if python is None:
        pytest.skip("Python %s is not installed under %s (pyenv install %s)"
                    % (version, pythons.pyenv_root(), version))
    return python


@pytest.mark.parametrize("version", [OLDEST, NEWEST])
def test_pins_install_and_every_module_imports(version):
    venv, pins = cached_venv(range_python(version), version)
    venv_python = os.path.join(venv, "bin", "python")
    freeze = subprocess.run([venv_python, "-m", "pip", "freeze", "--disable-pip-version-check"],
                            capture_output=True, text=True, timeout=120).stdout.split()
    for pin in pins:  # the venv holds exactly the pins (a pip that picked another version fails here)
        assert any(line.lower().replace("_", "-") == pin.lower() for line in freeze), (pin, freeze)
    r = subprocess.run([venv_python, "-W", "error::DeprecationWarning:google", "-c", IMPORT_ALL, ROOT],
                       capture_output=True, text=True, timeout=300, cwd=tempfile.gettempdir(),
                       env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "python %s" % version
    assert [l for l in lines if l.startswith("FAILED")] == []
    assert sorted(l.split()[1] for l in lines if l.startswith("module ")) == every_module()


GENERATE = r'''
import json, sys
sys.path.insert(0, sys.argv[1])
from gdb_nsb.generator import generate_file
generate_file(sys.argv[2], sys.argv[3], **json.loads(sys.argv[4]))
'''


@pytest.mark.parametrize("version", [OLDEST, NEWEST])
def test_generator_writes_the_same_patch_under_every_python(version, tmp_path):
    """`nsb generate` (ELF and DWARF reading, protobuf encoding, auto mode's code scan with capstone) under the
    range's Python and its pins writes the very bytes it writes under the test's own Python."""
    from gdb_nsb.generator import generate_file

    venv, _pins = cached_venv(range_python(version), version)
    target = G.build_target("pie")
    alpha = open(G.fixture("alpha.c")).read()
    patched = alpha.replace("return ++calls + counter;", "return ++calls + counter + 1000;")
    assert patched != alpha
    flags = ["-O0", "-g", "-fPIC", "-ffunction-sections", "-fdata-sections", "-c"]
    new_obj = T.build([("alpha.c", patched)], flags + ["-DNSB_RANGE_NEW"], "alpha.o")
    old_obj = T.build([("alpha.c", alpha)], flags + ["-DNSB_RANGE_OLD"], "alpha.o")
    cases = [(G.build_patch(["patch_all.c", "patch_statics.c"], "patch-all.so"), {}),
             (T.build([], ["-shared"], "alpha-fix.so", extra_inputs=[new_obj]),
              {"mode": "auto", "objects": [new_obj], "originals": [old_obj]})]
    for unbound, kw in cases:
        patch = str(tmp_path / os.path.basename(unbound))
        shutil.copyfile(unbound, patch)
        generate_file(target, patch, **kw)
        with open(patch, "rb") as f:
            here = f.read()
        shutil.copyfile(unbound, patch)  # the same path: the section records it
        r = subprocess.run([os.path.join(venv, "bin", "python"), "-c", GENERATE, ROOT, target, patch, json.dumps(kw)],
                           capture_output=True, text=True, timeout=300,
                           env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
        assert r.returncode == 0, r.stderr
        with open(patch, "rb") as f:
            assert f.read() == here, (version, kw)


def every_module():
    """The dotted names of every .py file of the package (a package by its __init__)."""
    out = []
    for dirpath, _dirs, files in os.walk(os.path.join(ROOT, "gdb_nsb")):
        rel = os.path.relpath(dirpath, ROOT).replace(os.sep, ".")
        if "__pycache__" in rel or "__init__.py" not in files:
            continue
        out += [rel if f == "__init__.py" else rel + "." + f[:-3] for f in files if f.endswith(".py")]
    return sorted(out)


def test_the_claimed_range_is_the_tested_one():
    with open(os.path.join(ROOT, "pyproject.toml")) as f:
        text = f.read()
    assert 'requires-python = ">=%s"' % OLDEST in text
    assert 'target-version = "py%s"' % OLDEST.replace(".", "") in text
    assert sys.version_info[:2] >= (3, 9)
