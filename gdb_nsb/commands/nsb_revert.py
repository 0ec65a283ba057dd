"""nsb-revert: take a live patch back (options and help: gdb_nsb/options.py)."""

from gdb_nsb.commands.common import NsbCommand, options_from
from gdb_nsb.process import engine


class NsbRevert(NsbCommand):
    operation = "revert"

    def operate(self, args):
        return engine.revert(args.patch, options_from(args))


def register():
    NsbRevert()
