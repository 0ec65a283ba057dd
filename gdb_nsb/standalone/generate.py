"""Bind a patch .so to its target: write the patch's vzpatch section.

    nsb generate TARGET PATCH_SO [-o OUT] [--debug-file F] [--explain] [--strict] [--allow-ipa-ra]
                 [--allow-ipa-cp-callee] [--allow-stale-copies] [--ipa-clones FILE]...
    nsb generate TARGET PATCH_SO OBJ... --mode auto [--original ORIG_OBJ]... [options]

TARGET is the binary the patch is for (executable or shared library), with
debug information in itself, in --debug-file F, or in a separate debug file
found by build-id or .gnu_debuglink under the debug directories
(--debug-dir, default /usr/lib/debug).

Manual mode (default): PATCH_SO is built with
`cc $(nsb cflags) -shared fix.c -o fix.so` and reaches target statics
through the vzp.h macros.

Auto mode (--mode auto): the patch is whole compile units of the target,
edited, each compiled `cc $(nsb cflags) -ffunction-sections -fdata-sections
-c unit.c` and linked `cc -shared unit.o -o fix.so`; give the objects (OBJ)
after PATCH_SO.  Their static variables and functions are rebound to the
target's (displacement fix-ups in the section), no macros needed.  With
--original ORIG_OBJ (the unpatched unit built the same way; repeatable, one
per unit) only functions whose code changed are redirected; without it every
function of the unit is redirected, with a warning.  Auto mode also
redirects, transitively, every function of the unit whose target code holds
an inlined copy of a redirected function or calls a clone of it (--explain
says why each was added); it refuses when that would need a function that
never returns (main, noreturn) or one the patch's units do not define.

Old code that keeps running: the target may hold a replaced function's old
code inlined into its callers, or as compiler clones (.isra, .constprop,
.part, .cold) that its callers call.  Manual mode refuses, naming each such
caller (function, file:line), unless the patch replaces it too;
--allow-stale-copies accepts them instead and the result names what stays
old.  --ipa-clones FILE (repeatable) gives GCC's -fdump-ipa-clones output of
a target unit (unit.c.000i.ipa-clones), used besides the DWARF.

Without -o, the vzpatch section is written into PATCH_SO (through a temporary
file renamed over it; regenerating replaces the section).  With -o OUT, the
raw section bytes go to OUT and PATCH_SO is left unchanged.

Checks (refusals name the symbol, the patch file:line and the target's
definition): a referenced variable whose type differs from the target's
(size, member order and offsets, member types, array lengths, const-ness;
typedefs looked through); a replaced function whose prototype differs (a
patch static with another prototype than the target's static of that name
is a new helper instead); a target or patch built with LTO; a unit not
written in C; writable data in the patch; a replaced function that shares
its code with another (identical code folding); a replaced function with
callers in its unit that may rely on a caller-side IPA assumption
(-fipa-ra, -fipa-pure-const, -fipa-modref, -fipa-reference,
-fipa-stack-alignment, -fipa-pta; the table is docs/IPA.md) that the patch
does not replace too (--allow-ipa-ra overrides), unless the function is
interposable; a unit optimised by a compiler the table does not model; a
reference to a function that exists only as a compiler clone; a reference to
a static whose code -fipa-vrp / -fipa-bit-cp may have specialised
(--allow-ipa-cp-callee overrides); old code that keeps running (see above;
--allow-stale-copies overrides).  Warnings, errors with --strict: auto mode
without --original, callers allowed by --allow-ipa-ra or --allow-ipa-cp-callee.

--explain prints one line per decision: each replaced function and the target
address and file it binds to, each helper (new) function, each vzp.h
reference and the target symbol it means, each pre-resolved global; in auto
mode each unchanged function and each fix-up.

Exit status: 0 done (warnings go to stderr); 11 debug information missing;
12 the patch is refused (unknown or ambiguous symbol, type or prototype
mismatch, writable data, LTO, -fipa-ra callers, stale copies of old code, a
warning with --strict ...);
9 a file is not a usable ELF file.
"""

import sys


def add_arguments(parser):
    parser.add_argument("target", metavar="TARGET", help="the target executable or shared library")
    parser.add_argument("patch", metavar="PATCH_SO", help="the patch shared object (built -O0 -g -fPIC -shared)")
    parser.add_argument("objects", metavar="OBJ", nargs="*",
                        help="auto mode: the patch's object files (-g -ffunction-sections -fdata-sections)")
    parser.add_argument("-o", "--output", metavar="OUT",
                        help="write the raw vzpatch section bytes to OUT instead of into PATCH_SO")
    parser.add_argument("--debug-file", metavar="F", help="the target's separate debug file")
    parser.add_argument("--debug-dir", metavar="DIR", action="append",
                        help="where separate debug files live (.build-id/xx/yyyy.debug); repeatable")
    parser.add_argument("--mode", choices=("manual", "auto"), default="manual",
                        help="manual: vzp.h macros (default); auto: whole units given as OBJ files")
    parser.add_argument("--original", metavar="ORIG_OBJ", action="append", default=[],
                        help="auto mode: the unpatched unit's object, to redirect only changed functions; "
                             "repeatable")
    parser.add_argument("--strict", action="store_true",
                        help="treat warnings (no --original, allowed -fipa-ra callers) as errors")
    parser.add_argument("--allow-ipa-ra", action="store_true",
                        help="replace functions whose unpatched callers in the unit may rely on caller-side "
                             "IPA assumptions (-fipa-ra, -fipa-pure-const, ...; docs/IPA.md)")
    parser.add_argument("--allow-ipa-cp-callee", action="store_true",
                        help="let the patch call target statics that -fipa-vrp / -fipa-bit-cp may have "
                             "specialised for their callers' values (docs/IPA.md)")
    parser.add_argument("--allow-stale-copies", action="store_true",
                        help="accept callers that keep old code of a replaced function (inlined copies, calls to "
                             "clones) instead of refusing; what stays old is printed")
    parser.add_argument("--ipa-clones", metavar="FILE", action="append", default=[],
                        help="GCC -fdump-ipa-clones output of a target unit, used besides the DWARF; repeatable")
    parser.add_argument("--explain", action="store_true", help="print what was bound to what")


def run(args):
    from gdb_nsb.generator import generate_file

    gen = generate_file(args.target, args.patch, out=args.output, debug_file=args.debug_file,
                        debug_dirs=args.debug_dir, strict=args.strict, allow_ipa_ra=args.allow_ipa_ra,
                        mode=args.mode, objects=args.objects, originals=args.original,
                        allow_stale_copies=args.allow_stale_copies, ipa_clones=args.ipa_clones,
                        allow_ipa_cp_callee=args.allow_ipa_cp_callee)
    if args.explain:
        for line in gen.explain:
            print(line)
    for w in gen.warnings:
        print("nsb: warning: %s" % w, file=sys.stderr)
    for s in gen.stale:
        print("nsb: stays old (--allow-stale-copies): %s" % s, file=sys.stderr)
    lp = gen.livepatch
    fix = (", %d fix-up%s" % (len(lp.static_symbols), "" if len(lp.static_symbols) == 1 else "s")
           if lp.static_symbols else "")
    print("nsb: %s: %d function%s redirected, %d reference%s, %d global%s pre-resolved%s -> %s"
          % (args.patch, len(lp.func_jumps), "" if len(lp.func_jumps) == 1 else "s",
             len(lp.manual_symbols), "" if len(lp.manual_symbols) == 1 else "s",
             len(lp.global_symbols), "" if len(lp.global_symbols) == 1 else "s", fix,
             args.output or args.patch), file=sys.stderr)
    return 0
