"""nsb-list: the live patches applied in the process."""

import gdb

from gdb_nsb.commands.common import CommandParser, NsbCommand, add_operation_options, options_from
from gdb_nsb.process import engine


class NsbList(NsbCommand):
    """List the live patches of the process being debugged.

Usage: nsb-list

For each patch: build-id, file, target object and its build-id, load range,
state (active / inactive / target unloaded / partial) and every redirected
function with its layer (1 = just above the original code)."""

    name = "nsb-list"
    complete = gdb.COMPLETE_NONE

    def build_parser(self):
        p = CommandParser(prog="nsb-list", description="List live patches.")
        add_operation_options(p, mutating=False)
        return p

    def operate(self, args):
        return engine.list_patches(options_from(args))


def register():
    NsbList()
