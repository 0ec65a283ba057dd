"""nsb-check: is a patch applied, could it be applied now, and why not."""

from gdb_nsb.commands.common import CommandParser, NsbCommand, add_operation_options, options_from
from gdb_nsb.process import engine


class NsbCheck(NsbCommand):
    """Check a live patch against the process being debugged, changing nothing.

Usage: nsb-check [--allow-seccomp] PATCH

Says whether PATCH is applied (or partially applied), and if not, whether it
could be applied right now, with every reason it could not: target not
mapped, build-id mismatch, entry bytes not as expected, unresolvable symbol,
jump does not fit, threads inside functions it replaces, a seccomp filter,
another tracer, ptrace_scope."""

    name = "nsb-check"
    nonzero_is_answer = True

    def build_parser(self):
        p = CommandParser(prog="nsb-check", description="Check a live patch.")
        add_operation_options(p, mutating=False)
        p.add_argument("--allow-seccomp", action="store_true", help="do not count a seccomp filter as a reason")
        p.add_argument("patch", metavar="PATCH", help="live patch file")
        return p

    def operate(self, args):
        return engine.check(args.patch, options_from(args))


def register():
    NsbCheck()
