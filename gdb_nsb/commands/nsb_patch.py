"""nsb-patch: apply a live patch to the process being debugged (options and help: gdb_nsb/options.py)."""

from gdb_nsb.commands.common import NsbCommand, options_from
from gdb_nsb.process import engine


class NsbPatch(NsbCommand):
    operation = "patch"

    def operate(self, args):
        return engine.apply(args.patch, options_from(args))


def register():
    NsbPatch()
