"""nsb-patch: apply a live patch to the process being debugged."""

from gdb_nsb.commands.common import CommandParser, NsbCommand, add_operation_options, options_from
from gdb_nsb.process import engine


class NsbPatch(NsbCommand):
    """Apply a live patch to the process being debugged.

Usage: nsb-patch [--dry-run] [--retries N] [--strategy retry|runout] [--timeout S]
                 [--allow-seccomp] [--breakpoints refuse|disable] PATCH

PATCH is a patch .so with a vzpatch section (made by `nsb generate`).  All
threads stay stopped while the patch is mapped, bound and the replaced
functions' entries are redirected; it happens only at a safe point (no thread
inside a replaced function).  On any failure everything is rolled back.
Settings: show nsb."""

    name = "nsb-patch"

    def build_parser(self):
        p = CommandParser(prog="nsb-patch", description="Apply a live patch.")
        add_operation_options(p)
        p.add_argument("patch", metavar="PATCH", help="live patch file")
        return p

    def operate(self, args):
        return engine.apply(args.patch, options_from(args))


def register():
    NsbPatch()
