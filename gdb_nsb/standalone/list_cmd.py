"""List the live patches applied in running processes (nsb-list).

Exit 0: listed (also when there are none).  8: a patch is in a partial state.
16: the in-process registry is corrupt."""

from gdb_nsb.standalone import runner


def add_arguments(parser):
    runner.add_common(parser, need_patch=False)


def _prepare(args):
    opts = ["--timeout %g" % args.timeout]
    if args.verbose:
        opts.append("-v %d" % args.verbose)
    return opts, None


def run(args):
    return runner.run("list", args, _prepare)
