"""nsb-check: is a patch applied, could it be applied now, and why not (options and help: gdb_nsb/options.py)."""

from gdb_nsb.commands.common import NsbCommand, options_from
from gdb_nsb.process import engine


class NsbCheck(NsbCommand):
    operation = "check"
    nonzero_is_answer = True

    def operate(self, args):
        return engine.check(args.patch, options_from(args))


def register():
    NsbCheck()
