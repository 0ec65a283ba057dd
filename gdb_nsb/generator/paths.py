"""Comparing source paths as compilers spell them.

A ``vzp.h`` record carries ``__FILE__`` as the patch was compiled (often
relative), DWARF carries paths joined with the compile directory.  Two
spellings mean the same file when, after normalisation, one is the other or
the relative one is a component-wise suffix of the other.
"""

import os


def components(path):
    """The normalised path components of ``path`` (without empty/'.' parts)."""
    return [p for p in os.path.normpath(path).split(os.sep) if p not in ("", ".")]


def same_source(a, b):
    """True when ``a`` and ``b`` plausibly name the same source file."""
    if not a or not b:
        return False
    na, nb = os.path.normpath(a), os.path.normpath(b)
    if na == nb:
        return True
    if os.path.isabs(na) and os.path.isabs(nb):
        return False
    ca, cb = components(na), components(nb)
    short, long_ = (ca, cb) if len(ca) <= len(cb) else (cb, ca)
    return bool(short) and long_[-len(short):] == short and ".." not in short


def display(path):
    """A short spelling for messages: the path as given, normalised."""
    return os.path.normpath(path) if path else "?"


def where(file, line):
    """``file:line`` for messages (just the file when the line is unknown)."""
    return "%s:%s" % (display(file), line) if line else display(file)
