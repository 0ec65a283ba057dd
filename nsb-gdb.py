"""Load gdb-nsb into GDB:  (gdb) source /path/to/gdb-nsb/nsb-gdb.py

Makes the project's virtual environment (created by ./nsb from the Python GDB
embeds) importable from GDB's Python, then registers the nsb-* commands.
A gdb-nsb that was `pip install`ed into GDB's own Python needs no venv.
"""
import glob
import os
import sys

_here = os.path.dirname(os.path.realpath(__file__))
_venv = os.environ.get("NSB_VENV", os.path.join(_here, ".venv"))
_tag = "python%d.%d" % sys.version_info[:2]
for _sp in glob.glob(os.path.join(_venv, "lib", _tag, "site-packages")):
    if _sp not in sys.path:
        sys.path.insert(0, _sp)
if _here not in sys.path:
    sys.path.insert(0, _here)

import gdb_nsb.gdb_main  # noqa: E402,F401  (registers commands and parameters)
