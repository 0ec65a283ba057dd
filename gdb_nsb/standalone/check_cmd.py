"""Check, without changing anything, whether a live patch is applied and whether it could be now.

Exit 0: applied.  2: not applied, applicable now.  3: not applied, not applicable now (busy).
Other codes name the reason it can never apply here (mismatch, environment ...)."""

from gdb_nsb.standalone import runner
from gdb_nsb.standalone.patch_cmd import require_patch


def add_arguments(parser):
    runner.add_common(parser)
    parser.add_argument("--all-of", action="store_true",
                        help="also check every process that maps an object with the patch's target build-id")


def run(args):
    path = require_patch(args)
    return runner.run("check", args, ["--timeout %g" % args.timeout, runner.quote(path)])
