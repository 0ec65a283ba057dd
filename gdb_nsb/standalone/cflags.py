"""Print the compiler flags for building a live patch.

A patch is compiled position independent, unoptimised and with debug
information, against the directory holding vzp.h:

    cc $(nsb cflags) -shared fix.c -o fix.so      # compile and link in one go
    cc $(nsb cflags) -c fix.c -o fix.o            # or compile only ...
    cc $(nsb cflags --link) fix.o -o fix.so       # ... and link (adds -shared)

The flags are `-I<dir of vzp.h> -O0 -g -fPIC`; `--link` adds `-shared`.
The output is meant for $(...) expansion, which splits words on blanks, so an
installation directory containing blanks is refused rather than printed broken.
"""

import importlib.resources
import os

from gdb_nsb.errors import NsbError

PATCH_FLAGS = ("-O0", "-g", "-fPIC")


def include_dir():
    """Directory holding vzp.h, from the installed package data."""
    res = importlib.resources.files("gdb_nsb").joinpath("data", "vzp.h")
    path = str(res)
    if not os.path.isfile(path):
        # A zipped install has no real directory a compiler could use.
        raise NsbError("vzp.h is not available as a file (gdb_nsb installed as a zip?): %s" % path)
    return os.path.dirname(os.path.abspath(path))


def patch_cflags(link=False):
    """The flags as a list: -I<dir> -O0 -g -fPIC [-shared]."""
    d = include_dir()
    if any(c.isspace() for c in d):
        raise NsbError("the vzp.h directory contains blanks, which $(nsb cflags) cannot carry: %r" % d)
    flags = ["-I" + d] + list(PATCH_FLAGS)
    if link:
        flags.append("-shared")
    return flags


def add_arguments(parser):
    parser.add_argument("--link", action="store_true",
                        help="also print -shared, for linking patch objects into the patch .so")


def run(args):
    print(" ".join(patch_cflags(link=args.link)))
    return 0
