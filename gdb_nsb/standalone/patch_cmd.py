"""Apply a live patch to running processes (nsb-patch in a gdb -batch session each)."""

import os

from gdb_nsb import errors
from gdb_nsb.standalone import runner


def add_arguments(parser):
    runner.add_common(parser)
    runner.add_mutating(parser)
    parser.add_argument("--all-of", action="store_true",
                        help="also patch every process that maps an object with the patch's target build-id")


def mutating_options(args):
    opts = []
    if args.dry_run:
        opts.append("--dry-run")
    if args.retries is not None:
        opts.append("--retries %d" % args.retries)
    if args.strategy:
        opts.append("--strategy " + args.strategy)
    if args.allow_seccomp:
        opts.append("--allow-seccomp")
    opts.append("--timeout %g" % args.timeout)
    if args.verbose:
        opts.append("-v %d" % args.verbose)
    return opts


def require_patch(args):
    if not args.patch:
        raise errors.UsageError("give the live patch with -f PATCH")
    if not os.path.isfile(args.patch):
        raise errors.PatchFileError("patch file not found: %s" % args.patch)
    return os.path.abspath(args.patch)


def run(args):
    path = require_patch(args)
    return runner.run("patch", args, mutating_options(args) + [runner.quote(path)])
