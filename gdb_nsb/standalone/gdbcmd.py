"""Start GDB with gdb-nsb loaded; every argument goes to GDB.

Example:  nsb gdb -p PID      then, inside GDB:  nsb-patch fix.so
"""

import os

from gdb_nsb.standalone.gdbrun import gdb_base_args


def add_arguments(parser):
    parser.add_argument("gdb_args", nargs="...", metavar="GDB-ARGS", help="arguments passed to gdb")


def run(args):
    return exec_gdb(args.gdb_args)


def exec_gdb(gdb_args):
    argv = gdb_base_args(batch=False) + list(gdb_args)
    os.execvp(argv[0], argv)
