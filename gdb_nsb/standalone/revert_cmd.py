"""Take an applied live patch back (nsb-revert in a gdb -batch session each).

The patch is named by its file or by its build-id (-f accepts either)."""

import os

from gdb_nsb import errors
from gdb_nsb.standalone import runner
from gdb_nsb.standalone.patch_cmd import mutating_options


def add_arguments(parser):
    runner.add_common(parser, patch_help="live patch file, or its build-id")
    runner.add_mutating(parser)
    parser.add_argument("--unmap", action="store_true",
                        help="also unmap the patch's memory (after a scan finds no pointer into it)")


def run(args):
    if not args.patch:
        raise errors.UsageError("give the live patch with -f PATCH (file or build-id)")
    ident = os.path.abspath(args.patch) if os.path.exists(args.patch) else args.patch
    opts = mutating_options(args)
    if args.unmap:
        opts.append("--unmap")
    return runner.run("revert", args, opts + [runner.quote(ident)])
