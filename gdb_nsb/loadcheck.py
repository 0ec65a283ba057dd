"""What nsb-gdb.py checks before it loads gdb-nsb into GDB: the virtual environment and the pinned dependencies.

Each problem is one line that names what is missing and how to fix it, instead of an ImportError
later.  Standard library only (it runs before the dependencies are importable) and no gdb import.
"""

import os
import re

_MARKER = re.compile(r"""^python_version\s*(<=|>=|==|!=|<|>)\s*["'](\d+)\.(\d+)["']$""")
_OPS = {"<": lambda a, b: a < b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b,
        ">=": lambda a, b: a >= b, "==": lambda a, b: a == b, "!=": lambda a, b: a != b}


def marker_applies(marker, version_info):
    """Whether a requirement's environment marker holds here: python_version clauses joined by `and`."""
    if not marker.strip():
        return True
    here = tuple(version_info[:2])
    for clause in marker.split(" and "):
        m = _MARKER.match(clause.strip())
        if m is None:
            raise ValueError("unsupported environment marker: %r (python_version <op> \"X.Y\" only)" % clause)
        if not _OPS[m.group(1)](here, (int(m.group(2)), int(m.group(3)))):
            return False
    return True


def pins(requirements, version_info):
    """[(distribution, version)] of the ``name==version[; marker]`` requirements that apply here."""
    out = []
    for req in requirements:
        spec, _, marker = req.partition(";")
        name, sep, version = spec.partition("==")
        if not sep:
            raise ValueError("not pinned with ==: %r" % req)
        if marker_applies(marker, version_info):
            out.append((name.strip(), version.strip()))
    return out


def pyproject_requirements(text):
    """The strings of ``dependencies = [...]`` in pyproject.toml (no TOML parser before Python 3.11)."""
    block = re.search(r"^dependencies\s*=\s*\[(.*?)^\]", text, re.S | re.M)
    if block is None:
        raise ValueError("pyproject.toml has no dependencies list")
    return [a or b for a, b in re.findall(r"""^\s*(?:"([^"]*)"|'([^']*)')""", block.group(1), re.M)]


def missing_or_wrong(wanted, installed_version):
    """Lines naming each pin not met; ``installed_version(name)`` returns a version or None."""
    missing, wrong = [], []
    for name, version in wanted:
        have = installed_version(name)
        if have is None:
            missing.append("%s==%s" % (name, version))
        elif have != version:
            wrong.append("%s %s (needs %s)" % (name, have, version))
    return missing, wrong


def venv_site_packages(venv, version_info):
    return os.path.join(venv, "lib", "python%d.%d" % tuple(version_info[:2]), "site-packages")


def venv_python_version(venv):
    """"X.Y" of the Python that made ``venv`` (its pyvenv.cfg), or None when it is not a venv."""
    try:
        with open(os.path.join(venv, "pyvenv.cfg")) as f:
            cfg = dict(line.split("=", 1) for line in f if "=" in line)
    except OSError:
        return None
    cfg = {k.strip(): v.strip() for k, v in cfg.items()}
    full = cfg.get("version") or cfg.get("version_info") or ""
    return ".".join(full.split(".")[:2]) or None


def _normal(name):
    return re.sub(r"[-_.]+", "_", name).lower()


def installed_in(paths):
    """``installed_version`` that looks only in ``paths`` (a venv's site-packages, or GDB's sys.path).

    Reads the names of the ``NAME-VERSION.dist-info`` directories (one listdir per path): asking
    importlib.metadata would read every distribution's metadata, ~0.5 s on each GDB start.
    """
    found = {}
    for path in reversed(list(paths)):  # the first path wins, as for imports
        try:
            entries = os.listdir(path or ".")
        except OSError:
            continue
        for entry in entries:
            m = re.match(r"^(.+?)-([^-]+)\.(?:dist|egg)-info$", entry)
            if m:
                found[_normal(m.group(1))] = m.group(2)
    return lambda name: found.get(_normal(name))


def problem(root, venv, version_info, requirements, gdb_paths, venv_given=False):
    """(None, site-packages to add or None) when gdb-nsb can load, else (one line, None).

    ``root``: the checkout; ``venv``: the venv to use (NSB_VENV or root/.venv); ``gdb_paths``: GDB's
    own sys.path (a gdb-nsb whose dependencies were pip-installed into GDB's Python needs no venv).
    """
    here = "%d.%d" % tuple(version_info[:2])
    wanted = pins(requirements, version_info)
    setup = os.path.join(root, "nsb")
    fix = "run %s once (it makes %s from GDB's Python and installs the pinned dependencies)" % (setup, venv)
    if not os.path.isdir(venv):
        missing, wrong = missing_or_wrong(wanted, installed_in(gdb_paths))
        if not missing and not wrong:
            return None, None  # installed into GDB's own Python
        where = "NSB_VENV=%s" % venv if venv_given else venv
        return ("no virtual environment at %s and GDB's Python %s lacks %s: %s" % (
            where, here, ", ".join(missing + wrong), fix)), None
    made_by = venv_python_version(venv)
    if made_by is None:
        return "%s is not a virtual environment (no pyvenv.cfg): remove it and %s" % (venv, fix), None
    if made_by != here:
        return ("%s was made by Python %s but GDB embeds Python %s: remove it (rm -r %s) and %s"
                % (venv, made_by, here, venv, fix)), None
    site = venv_site_packages(venv, version_info)
    missing, wrong = missing_or_wrong(wanted, installed_in([site]))
    if missing or wrong:
        what = []
        if missing:
            what.append("lacks " + ", ".join(missing))
        if wrong:
            what.append("has " + ", ".join(wrong))
        return "%s %s: run %s once (it installs the pinned dependencies there)" % (
            venv, " and ".join(what), setup), None
    return None, site
