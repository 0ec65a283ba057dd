"""`nsb patch`: apply a live patch to running processes (nsb-patch in a gdb -batch session each).

Options and help: gdb_nsb/options.py."""

import os

from gdb_nsb import errors, options
from gdb_nsb.standalone import runner


def add_arguments(parser):
    runner.add_arguments(parser, "patch")


def patch_info(path, livepatch):
    """The patch as the JSON result names it (same fields as the extension's)."""
    return {"path": path, "build_id": livepatch.new_bid, "target_build_id": livepatch.old_bid,
            "target_name": livepatch.target_name or ""}


def require_patch(args):
    """The patch file's absolute path, and a function that reads it into its description.

    A missing patch file fails here at once (exit 9); a non-ELF or unbound one
    when the reader runs, which the runner does before attaching to anything.
    """
    if not args.patch:
        raise errors.UsageError("give the live patch with -f PATCH")
    path = os.path.abspath(args.patch)
    if not os.path.isfile(path):
        raise errors.PatchFileError("patch file not found: %s" % args.patch)

    def load_info():
        return patch_info(path, runner.read_patch(path))
    return path, load_info


def _prepare(args):
    path, load_info = require_patch(args)
    return options.forward("patch", args) + [runner.quote(path)], load_info


def run(args):
    return runner.run("patch", args, _prepare)
