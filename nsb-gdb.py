"""Load gdb-nsb into GDB:  (gdb) source /path/to/gdb-nsb/nsb-gdb.py

Makes the project's virtual environment (created by ./nsb from the Python GDB
embeds; NSB_VENV names another one) importable from GDB's Python, then
registers the nsb-* commands.  A gdb-nsb whose dependencies were `pip install`ed
into GDB's own Python needs no venv.  When something is missing (no venv, a
venv made by another Python, a dependency missing or at another version) it
says so in one line, with the fix, and loads nothing.
"""
import os
import sys

import gdb

_here = os.path.dirname(os.path.realpath(__file__))
if _here not in sys.path:
    sys.path.insert(0, _here)

from gdb_nsb import timeline  # noqa: E402  (standard library only)

timeline.mark("gdb_python")
from gdb_nsb import loadcheck  # noqa: E402  (standard library only)

_venv = os.environ.get("NSB_VENV") or os.path.join(_here, ".venv")
with open(os.path.join(_here, "pyproject.toml")) as _f:
    _requirements = loadcheck.pyproject_requirements(_f.read())
_problem, _site = loadcheck.problem(_here, _venv, sys.version_info, _requirements, sys.path,
                                    venv_given="NSB_VENV" in os.environ)
if _problem is not None:
    gdb.write("gdb-nsb not loaded: %s\n" % _problem, gdb.STDERR)
else:
    if _site is not None and _site not in sys.path:
        sys.path.insert(0, _site)
    import gdb_nsb.gdb_main  # noqa: F401  (registers commands and parameters)
