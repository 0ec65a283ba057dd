"""nsb-gdb.py says in one line what is missing and how to fix it: no venv, a venv made by another Python,
a dependency missing or at another version.  Pure checks (gdb_nsb/loadcheck.py), then a real GDB
pointed (NSB_VENV) at deliberately broken venvs."""

import os
import subprocess
import sys

import pytest

import pythons
from gdb_nsb import loadcheck as L

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOADER = os.path.join(ROOT, "nsb-gdb.py")
REQS = ['pyelftools==0.33; python_version >= "3.10"', 'pyelftools==0.32; python_version < "3.10"',
        "protobuf==7.36.2", "capstone==5.0.9"]


def gdb_python():
    out = subprocess.run(["gdb", "-nx", "-batch", "-ex", 'python import sys; print("%d.%d" % sys.version_info[:2])'],
                         capture_output=True, text=True, timeout=60)
    return out.stdout.strip()


def fake_venv(path, version, dists=()):
    """A venv directory as `python -m venv` leaves it, with ``dists`` [(name, version)] installed."""
    site = L.venv_site_packages(str(path), tuple(int(x) for x in version.split(".")))
    os.makedirs(site)
    with open(os.path.join(str(path), "pyvenv.cfg"), "w") as f:
        f.write("home = /usr/bin\ninclude-system-site-packages = false\nversion = %s.2\n" % version)
    for name, v in dists:
        os.makedirs(os.path.join(site, "%s-%s.dist-info" % (name.replace("-", "_"), v)))
    return str(path)


def test_markers_and_pins_per_python():
    assert L.pins(REQS, (3, 9, 18)) == [("pyelftools", "0.32"), ("protobuf", "7.36.2"), ("capstone", "5.0.9")]
    assert L.pins(REQS, (3, 13, 0))[0] == ("pyelftools", "0.33")
    assert L.marker_applies('python_version >= "3.9" and python_version < "3.10"', (3, 9))
    assert not L.marker_applies('python_version >= "3.9" and python_version < "3.10"', (3, 10))
    with pytest.raises(ValueError, match="unsupported environment marker"):
        L.marker_applies('sys_platform == "linux"', (3, 11))
    with pytest.raises(ValueError, match="not pinned"):
        L.pins(["protobuf>=6"], (3, 11))


def test_pyproject_requirements_are_the_declared_ones():
    with open(os.path.join(ROOT, "pyproject.toml")) as f:
        reqs = L.pyproject_requirements(f.read())
    assert reqs and all("==" in r for r in reqs)
    for version in ((3, 9), (3, 13)):  # every marker is one the loader understands
        names = [n for n, _v in L.pins(reqs, version)]
        assert sorted(set(names)) == sorted(names) and "protobuf" in names and "pyelftools" in names


def test_each_problem_is_one_line_naming_the_fix(tmp_path):
    here = (3, 11, 2)
    none, site = L.problem(ROOT, fake_venv(tmp_path / "ok", "3.11", [("pyelftools", "0.33"), ("protobuf", "7.36.2"),
                                                                      ("capstone", "5.0.9")]), here, REQS, [])
    assert none is None and site.endswith("lib/python3.11/site-packages")
    msg, _ = L.problem(ROOT, str(tmp_path / "absent"), here, REQS, [], venv_given=True)
    assert msg.startswith("no virtual environment at NSB_VENV=%s and GDB's Python 3.11 lacks pyelftools==0.33, "
                          "protobuf==7.36.2, capstone==5.0.9: run %s/nsb once" % (tmp_path / "absent", ROOT))
    msg, _ = L.problem(ROOT, fake_venv(tmp_path / "other", "3.13"), here, REQS, [])
    assert msg.startswith("%s was made by Python 3.13 but GDB embeds Python 3.11: remove it" % (tmp_path / "other"))
    (tmp_path / "plain").mkdir()
    msg, _ = L.problem(ROOT, str(tmp_path / "plain"), here, REQS, [])
    assert "is not a virtual environment (no pyvenv.cfg)" in msg
    msg, _ = L.problem(ROOT, fake_venv(tmp_path / "old", "3.11", [("pyelftools", "0.33"), ("protobuf", "6.33.6")]),
                       here, REQS, [])
    assert msg == ("%s lacks capstone==5.0.9 and has protobuf 6.33.6 (needs 7.36.2): run %s/nsb once (it installs "
                   "the pinned dependencies there)" % (tmp_path / "old", ROOT))
    for m in (msg,):
        assert "\n" not in m


def test_no_venv_needed_when_gdbs_python_has_the_dependencies(tmp_path):
    site = fake_venv(tmp_path / "gdbpy", "3.11", [("pyelftools", "0.33"), ("protobuf", "7.36.2"),
                                                  ("capstone", "5.0.9")])
    site = L.venv_site_packages(site, (3, 11))
    assert L.problem(ROOT, str(tmp_path / "absent"), (3, 11, 2), REQS, [site]) == (None, None)


def _gdb_loading(venv):
    env = dict(os.environ, NSB_VENV=venv)
    return subprocess.run(["gdb", "-nx", "-batch", "-iex", "source " + LOADER, "-ex", "help nsb-patch"],
                          capture_output=True, text=True, timeout=120, env=env)


@pytest.mark.gdb
def test_gdb_says_what_is_missing(tmp_path):
    py = gdb_python()
    major, minor = (int(x) for x in py.split("."))
    other = next((v for v in sorted(pythons.pyenv_pythons(), reverse=True) if v != py), None)
    real_venvs = []
    if other is not None:  # a real venv of another Python
        subprocess.run([pythons.pyenv_pythons()[other], "-m", "venv", "--without-pip", str(tmp_path / "other")],
                       check=True, timeout=120)
        real_venvs.append((str(tmp_path / "other"), "was made by Python %s but GDB embeds Python %s" % (other, py)))
    # A real venv of GDB's own Python (from the test venv's base interpreter), with nothing installed.
    subprocess.run([os.path.join(sys.base_prefix, "bin", "python%s" % py), "-m", "venv", "--without-pip",
                    str(tmp_path / "empty")], check=True, timeout=120)
    wrong = fake_venv(tmp_path / "wrong", py)
    with open(os.path.join(ROOT, "pyproject.toml")) as f:
        wanted = L.pins(L.pyproject_requirements(f.read()), (major, minor))
    site = L.venv_site_packages(wrong, (major, minor))
    for i, (name, version) in enumerate(wanted):
        os.makedirs(os.path.join(site, "%s-%s.dist-info" % (name.replace("-", "_"), "0.0.1" if i == 0 else version)))
    cases = real_venvs + [
        (str(tmp_path / "absent"), "no virtual environment at NSB_VENV=%s and GDB's Python %s lacks"
         % (tmp_path / "absent", py)),
        (str(tmp_path / "empty"), "%s lacks %s==%s" % (tmp_path / "empty", wanted[0][0], wanted[0][1])),
        (wrong, "%s has %s 0.0.1 (needs %s)" % (wrong, wanted[0][0], wanted[0][1])),
    ]
    for venv, says in cases:
        r = _gdb_loading(venv)
        lines = [l for l in r.stderr.splitlines() if l.strip()]
        assert lines[0].startswith("gdb-nsb not loaded: ") and says in lines[0], (venv, r.stderr)
        assert "%s/nsb once" % ROOT in lines[0]
        assert "Traceback" not in r.stderr and "Apply a live patch" not in r.stdout


def test_runner_reports_the_loader_line_not_what_gdb_said_after_it():
    from gdb_nsb.standalone import runner
    err = 'gdb-nsb not loaded: /x/.venv lacks protobuf==7.36.2: run /x/nsb once\nUndefined command: "nsb-patch".\n'
    assert runner._gdb_failure_message(err) == ("GDB failed without a result: gdb-nsb not loaded: /x/.venv lacks "
                                                "protobuf==7.36.2: run /x/nsb once")
