"""How the standalone tools start GDB with the extension loaded."""

import os

import gdb_nsb

PACKAGE_DIR = os.path.dirname(os.path.abspath(gdb_nsb.__file__))
REPO_LOADER = os.path.join(os.path.dirname(PACKAGE_DIR), "nsb-gdb.py")


def loader_commands():
    """GDB commands that load gdb-nsb in a fresh GDB (checkout or pip install)."""
    if os.path.exists(REPO_LOADER):
        return ["source " + REPO_LOADER]
    # Installed as a package: make this interpreter's site-packages visible to GDB's Python.
    import sysconfig
    paths = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], os.path.dirname(PACKAGE_DIR)}
    add = "; ".join("sys.path.insert(0, %r)" % p for p in sorted(paths))
    return ["python import sys; %s; import gdb_nsb.gdb_main" % add]


def gdb_base_args(batch=True):
    args = ["gdb"]
    if batch:
        args += ["-nx", "-batch"]
    args += ["-iex", "set debuginfod enabled off"]
    for c in loader_commands():
        args += ["-iex", c]
    return args
