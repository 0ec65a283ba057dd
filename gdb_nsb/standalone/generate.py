"""Bind a patch .so to its target: write the patch's vzpatch section.

    nsb generate TARGET PATCH_SO [-o OUT] [--debug-file F] [--explain]

TARGET is the binary the patch is for (executable or shared library), with
debug information in itself, in --debug-file F, or in a separate debug file
found by build-id or .gnu_debuglink under the debug directories
(--debug-dir, default /usr/lib/debug).  PATCH_SO is built with
`cc $(nsb cflags) -shared fix.c -o fix.so`.

Without -o, the vzpatch section is written into PATCH_SO (through a temporary
file renamed over it; regenerating replaces the section).  With -o OUT, the
raw section bytes go to OUT and PATCH_SO is left unchanged.

--explain prints one line per decision: each replaced function and the target
address and file it binds to, each helper (new) function, each vzp.h
reference and the target symbol it means, each pre-resolved global.

Exit status: 0 done; 11 debug information missing; 12 the patch is refused
(unknown or ambiguous symbol, writable data, too-short function ...);
9 a file is not a usable ELF file.
"""

import sys


def add_arguments(parser):
    parser.add_argument("target", metavar="TARGET", help="the target executable or shared library")
    parser.add_argument("patch", metavar="PATCH_SO", help="the patch shared object (built -O0 -g -fPIC -shared)")
    parser.add_argument("-o", "--output", metavar="OUT",
                        help="write the raw vzpatch section bytes to OUT instead of into PATCH_SO")
    parser.add_argument("--debug-file", metavar="F", help="the target's separate debug file")
    parser.add_argument("--debug-dir", metavar="DIR", action="append",
                        help="where separate debug files live (.build-id/xx/yyyy.debug); repeatable")
    parser.add_argument("--explain", action="store_true", help="print what was bound to what")


def run(args):
    from gdb_nsb.generator import generate_file

    gen = generate_file(args.target, args.patch, out=args.output, debug_file=args.debug_file,
                        debug_dirs=args.debug_dir)
    if args.explain:
        for line in gen.explain:
            print(line)
    lp = gen.livepatch
    print("nsb: %s: %d function%s redirected, %d reference%s, %d global%s pre-resolved -> %s"
          % (args.patch, len(lp.func_jumps), "" if len(lp.func_jumps) == 1 else "s",
             len(lp.manual_symbols), "" if len(lp.manual_symbols) == 1 else "s",
             len(lp.global_symbols), "" if len(lp.global_symbols) == 1 else "s",
             args.output or args.patch), file=sys.stderr)
    return 0
