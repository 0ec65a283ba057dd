"""nsb-list: the live patches applied in the process."""

import gdb

from gdb_nsb.commands.common import CommandParser, NsbCommand, add_operation_options, options_from
from gdb_nsb import patchfiles
from gdb_nsb.process import engine, symbols


class NsbList(NsbCommand):
    """List the live patches of the process being debugged.

Usage: nsb-list [--patch-dir DIR[:DIR...]]

For each patch: build-id, file, target object and its build-id, load range,
state (active / inactive / target unloaded / partial) and every redirected
function with its layer (1 = just above the original code).  Works on a core
file too (post-mortem).  A patch whose file is not found (recorded path, then
the patch directories of --patch-dir and `set nsb patch-dir`, by build-id) is
listed with "patch file not found": its frames have no symbols."""

    name = "nsb-list"
    complete = gdb.COMPLETE_NONE

    def build_parser(self):
        p = CommandParser(prog="nsb-list", description="List live patches.")
        add_operation_options(p, mutating=False)
        p.add_argument("--patch-dir", default="", metavar="DIR[:DIR...]",
                       help="also look for patch files here, by build-id (set nsb patch-dir)")
        return p

    def operate(self, args):
        with symbols.extra_dirs(patchfiles.split_dirs(args.patch_dir)):
            return engine.list_patches(options_from(args))


def register():
    NsbList()
