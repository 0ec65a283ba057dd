"""The `nsb` command line: dispatches to one subcommand module each."""

import argparse
import importlib
import sys

from gdb_nsb.errors import NsbError

# subcommand -> (module, one-line help).  Each module has add_arguments(parser) and run(args) -> int.
SUBCOMMANDS = {}


def build_parser():
    parser = argparse.ArgumentParser(
        prog="nsb",
        description="gdb-nsb: live patching of running x86_64 Linux processes.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, helptext) in SUBCOMMANDS.items():
        mod = importlib.import_module(module)
        p = sub.add_parser(name, help=helptext, description=(mod.__doc__ or helptext),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.add_arguments(p)
        p.set_defaults(_module=mod)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
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


if __name__ == "__main__":
    sys.exit(main())
