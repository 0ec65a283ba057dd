"""`nsb revert`: take an applied live patch back (nsb-revert in a gdb -batch session each).

Options and help: gdb_nsb/options.py."""

import os

from gdb_nsb import errors, options
from gdb_nsb.standalone import runner
from gdb_nsb.standalone.patch_cmd import patch_info


def add_arguments(parser):
    runner.add_arguments(parser, "revert")


def identify(ident):
    """(what nsb-revert is given, a function returning the patch description) for a file or a build-id."""
    if os.path.isfile(ident):
        path = os.path.abspath(ident)

        def load_info():
            try:
                return patch_info(path, runner.read_patch(path, check_identity=False))
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
    return options.forward("revert", args) + [runner.quote(ident)], load_info


def run(args):
    return runner.run("revert", args, _prepare)
