"""Take an applied live patch back (nsb-revert in a gdb -batch session each).

The patch is named by its file or by its build-id (-f accepts either; a
build-id prefix is enough when it is unambiguous in the process).  --all-of
reverts it in every process on this host that carries it.
Exit 0: reverted.  2: the patch is not applied there."""

import os

from gdb_nsb import errors
from gdb_nsb.standalone import runner
from gdb_nsb.standalone.patch_cmd import mutating_options, patch_info


def add_arguments(parser):
    runner.add_common(parser, patch_help="live patch file, or its build-id")
    runner.add_mutating(parser)
    parser.add_argument("--unmap", action="store_true",
                        help="also unmap the patch's memory (after a scan finds no pointer into it)")
    parser.add_argument("--all-of", action="store_true",
                        help="also revert in every process that carries the patch (found without attaching; "
                             "with --unmap, inactive records too)")


def identify(ident):
    """(what nsb-revert is given, a function returning the patch description) for a file or a build-id."""
    if os.path.isfile(ident):
        path = os.path.abspath(ident)

        def load_info():
            from gdb_nsb.elf.livepatch import LivePatch
            try:
                return patch_info(path, LivePatch.read(path, check_identity=False))
            except errors.PatchFileError:
                # Any ELF file names its patch by its build-id, vzpatch section or not.
                from gdb_nsb.elf.image import ElfImage
                bid = ElfImage(path).build_id
                if not bid:
                    raise errors.PatchFileError("%s has no build-id: it cannot name a live patch" % ident)
                return {"path": path, "build_id": bid}
        return path, load_info
    if len(ident) >= 4 and all(c in "0123456789abcdef" for c in ident.lower()):
        return ident.lower(), lambda: {"build_id": ident.lower()}
    raise errors.PatchFileError("no such patch file, and not a build-id: %s" % ident)


def _prepare(args):
    if not args.patch:
        raise errors.UsageError("give the live patch with -f PATCH (file or build-id)")
    ident, load_info = identify(args.patch)
    opts = mutating_options(args)
    if args.unmap:
        opts.append("--unmap")
    return opts + [runner.quote(ident)], load_info


def run(args):
    return runner.run("revert", args, _prepare)
