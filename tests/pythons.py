"""The CPython interpreters pyenv holds on this machine, by "X.Y" (tests of other Pythons than GDB's)."""

import glob
import os
import re


def pyenv_root():
    return os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")


def pyenv_pythons():
    """{"X.Y": path of its python} for every CPython pyenv installed (the newest patch release of each)."""
    found = {}
    for path in sorted(glob.glob(os.path.join(pyenv_root(), "versions", "*", "bin", "python3"))):
        m = re.match(r"^(\d+)\.(\d+)\.(\d+)$", os.path.basename(os.path.dirname(os.path.dirname(path))))
        if m and os.access(path, os.X_OK):
            key = "%s.%s" % m.groups()[:2]
            patch = int(m.group(3))
            if key not in found or found[key][0] < patch:
                found[key] = (patch, path)
    return {k: v[1] for k, v in found.items()}
