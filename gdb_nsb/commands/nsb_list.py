"""nsb-list: the live patches applied in the process (options and help: gdb_nsb/options.py)."""

import gdb

from gdb_nsb import patchfiles
from gdb_nsb.commands.common import NsbCommand, options_from
from gdb_nsb.process import engine, symbols


class NsbList(NsbCommand):
    operation = "list"
    complete = gdb.COMPLETE_NONE

    def operate(self, args):
        with symbols.extra_dirs(patchfiles.split_dirs(args.patch_dir)):
            return engine.list_patches(options_from(args))


def register():
    NsbList()
