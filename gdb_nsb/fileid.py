"""A file's identity: the key of every cache of parsed files (pure: no gdb).

(device, inode, size, mtime in ns): a file replaced, rewritten or touched gets
another key, so a cached parse never stands for a file that changed since.
The GDB side's caches (process/filecache.py) and the patch the runner hands to
its gated GDB (standalone/runner.py, process/fastattach.py) use the same key.
"""

import os


def file_identity(path):
    """The identity of ``path`` (OSError when it cannot be stat'ed)."""
    st = os.stat(path)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
