"""Check, without changing anything, whether a live patch is applied and whether it could be now.

Exit 0: applied.  2: not applied, applicable now.  3: not applied, not applicable now (busy:
a thread is inside a function the patch replaces).  8: partially applied.  Other codes name the
reason it can never apply here (4 mismatch, 14 environment ...)."""

from gdb_nsb.standalone import runner
from gdb_nsb.standalone.patch_cmd import require_patch


def add_arguments(parser):
    runner.add_common(parser)
    parser.add_argument("--allow-seccomp", action="store_true",
                        help="do not count a seccomp filter as a reason it cannot apply")
    parser.add_argument("--all-of", action="store_true",
                        help="also check every process that maps an object with the patch's target build-id")


def _prepare(args):
    path, load_info = require_patch(args)
    opts = ["--timeout %g" % args.timeout]
    if args.allow_seccomp:
        opts.append("--allow-seccomp")
    if args.verbose:
        opts.append("-v %d" % args.verbose)
    return opts + [runner.quote(path)], load_info


def run(args):
    return runner.run("check", args, _prepare)
