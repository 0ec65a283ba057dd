"""List the live patches applied in running processes (nsb-list)."""

from gdb_nsb.standalone import runner


def add_arguments(parser):
    runner.add_common(parser, need_patch=False)


def run(args):
    return runner.run("list", args, ["--timeout %g" % args.timeout])
