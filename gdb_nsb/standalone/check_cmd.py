"""`nsb check`: whether a live patch is applied and whether it could be now, changing nothing.

Options and help: gdb_nsb/options.py."""

from gdb_nsb import options
from gdb_nsb.standalone import runner
from gdb_nsb.standalone.patch_cmd import require_patch


def add_arguments(parser):
    runner.add_arguments(parser, "check")


def _prepare(args):
    path, load_info = require_patch(args)
    return options.forward("check", args) + [runner.quote(path)], load_info


def run(args):
    return runner.run("check", args, _prepare)
