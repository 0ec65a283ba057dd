"""nsb-revert: take a live patch back."""

from gdb_nsb.commands.common import CommandParser, NsbCommand, add_operation_options, options_from
from gdb_nsb.process import engine


class NsbRevert(NsbCommand):
    """Take an applied live patch back.

Usage: nsb-revert [--unmap] [--dry-run] [--retries N] [--strategy retry|runout] [--timeout S] PATCH|BUILD-ID

Restores, at a safe point (no thread inside the patch's code), the layer below
the patch for each function it redirects: the original code, or the jump of
the patch under it.  Layers can be reverted in any order.  The patch's memory
stays mapped (inactive) so that pointers the program kept into it stay valid;
re-applying reuses it.  --unmap also unmaps it, after checking that no
register or writable memory points into it."""

    name = "nsb-revert"

    def build_parser(self):
        p = CommandParser(prog="nsb-revert", description="Take a live patch back.")
        add_operation_options(p)
        p.add_argument("--unmap", action="store_true", help="also unmap the patch's memory")
        p.add_argument("patch", metavar="PATCH|BUILD-ID", help="the patch file or its build-id")
        return p

    def operate(self, args):
        return engine.revert(args.patch, options_from(args))


def register():
    NsbRevert()
