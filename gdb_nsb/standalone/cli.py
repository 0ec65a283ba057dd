"""The `nsb` command line: dispatches to one subcommand module each."""

import argparse
import importlib
import json
import sys

from gdb_nsb import options, timeline
from gdb_nsb.errors import NsbError

# subcommand -> (module, one-line help).  Each module has add_arguments(parser) and run(args) -> int.
# The operations' help and options are declared in gdb_nsb/options.py, with their GDB commands'.
SUBCOMMANDS = {
    "patch": ("gdb_nsb.standalone.patch_cmd", options.COMMANDS["patch"].runner_summary),
    "revert": ("gdb_nsb.standalone.revert_cmd", options.COMMANDS["revert"].runner_summary),
    "list": ("gdb_nsb.standalone.list_cmd", options.COMMANDS["list"].runner_summary),
    "check": ("gdb_nsb.standalone.check_cmd", options.COMMANDS["check"].runner_summary),
    "demo": ("gdb_nsb.standalone.demo", "watch a running server being live-patched and reverted (no arguments)"),
    "gdb": ("gdb_nsb.standalone.gdbcmd", "start GDB with the nsb-* commands loaded"),
    "generate": ("gdb_nsb.standalone.generate", "bind a patch .so to its target: write its vzpatch section"),
    "cflags": ("gdb_nsb.standalone.cflags", "print the compiler flags for building a patch"),
}


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        # Usage errors exit 1 (argparse's default 2 means "not applied" here).
        self.print_usage(sys.stderr)
        print("%s: error: %s" % (self.prog, message), file=sys.stderr)
        raise SystemExit(1)


def build_parser(only=None):
    """The nsb parser.  With ``only``, just that subcommand's module is imported
    (the others keep their one-line help): `nsb patch` need not load the demo
    or the generator to start."""
    from gdb_nsb.standalone.runner import EPILOG  # small: no GDB, no ELF code

    parser = _Parser(
        prog="nsb",
        description="gdb-nsb: live patching of running x86_64 Linux processes.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="The exit codes of patch, revert, list and check (the runner):\n" + EPILOG.split("\n", 1)[1],
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, (module, helptext) in SUBCOMMANDS.items():
        if only is not None and name != only:
            sub.add_parser(name, help=helptext)
            continue
        mod = importlib.import_module(module)
        about = options.runner_description(name) if name in options.COMMANDS else (mod.__doc__ or helptext)
        p = sub.add_parser(name, help=helptext, description=about,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.add_arguments(p)
        p.set_defaults(_module=mod)
    return parser


def main(argv=None):
    timeline.mark("runner_start")
    argv = list(sys.argv[1:] if argv is None else argv)
    chosen = argv[0] if argv and argv[0] in SUBCOMMANDS else None
    if chosen in options.COMMANDS:
        # The runner's scheduling policy, before anything else costs CPU; GDB inherits it (not `nsb gdb`:
        # an interactive GDB stays normal).
        from gdb_nsb.standalone import gdbrun
        gdbrun.set_policy(gdbrun.resolve_policy(options.policy_in(argv[1:])))
    if chosen == "gdb" and argv[1:2] not in (["-h"], ["--help"]):
        # Everything after `gdb` belongs to GDB, options included (argparse would take them).
        from gdb_nsb.standalone import gdbcmd
        return gdbcmd.exec_gdb(argv[1:])
    parser = build_parser(only=chosen) if chosen else build_parser(only="")
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        if e.code == 1 and chosen and "--json" in argv:
            # --json promises one document on stdout, also for a usage error.
            print(json.dumps({"command": chosen, "result": "error", "exit_code": 1, "processes": [],
                              "message": "usage error (see stderr)"}, indent=2, sort_keys=True))
        raise
    if not getattr(args, "command", None):
        parser.print_help()
        return 1
    try:
        return args._module.run(args)
    except NsbError as e:
        print("nsb: %s" % e, file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130


def _exit_now(code):
    """Leave without the interpreter's teardown (freeing every parsed patch and module: ~50-100 ms of latency
    measured by bench/run.py's profile, "runner exit").  Every GDB session has ended and every file is
    closed by then; only the standard streams need flushing."""
    import os
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            code = code or 1  # a lost result (closed pipe) must not look like success
    os._exit(0 if code is None else code if isinstance(code, int) else 1)


if __name__ == "__main__":
    try:
        _code = main()
    except SystemExit as e:
        _code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if not isinstance(e.code, (int, type(None))):
            print(e.code, file=sys.stderr)
    except BrokenPipeError:
        # Whoever read stdout went away (`nsb list --json | head`): whatever the command did, its result
        # was lost, which must not look like success (as in _exit_now); nothing to tell on stderr.
        _code = 1
    _exit_now(_code)
