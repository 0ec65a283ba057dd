"""What every nsb-* command shares: argument parsing, settings, errors, results.

Arguments are parsed with argparse (GDB's own quoting via gdb.string_to_argv);
a parse error or any core error becomes one gdb.GdbError line.  The runner
passes ``--result-file F``: the command then writes its outcome there as JSON,
also when it fails, so a failure inside GDB never looks like success.
"""

import argparse
import json
import os
import time

import gdb

from gdb_nsb import errors, patchfiles
from gdb_nsb.process import autoregister, engine, symbols
from gdb_nsb.process.safepoint_wait import DEFAULT_TRIES


class _ArgumentError(Exception):
    pass


class CommandParser(argparse.ArgumentParser):
    """argparse that raises instead of exiting GDB."""

    def error(self, message):
        raise _ArgumentError("%s: %s" % (self.prog, message))

    def exit(self, status=0, message=None):
        if message:
            gdb.write(message)
        raise _ArgumentError(None)

    def print_help(self, file=None):
        gdb.write(self.format_help())


# ------------------------------------------------------------------ settings: set/show nsb ...

class _Prefix(gdb.Command):
    def __init__(self, name, doc):
        self.__doc__ = doc
        super().__init__(name, gdb.COMMAND_DATA, gdb.COMPLETE_NONE, True)


class _Setting(gdb.Parameter):
    def __init__(self, name, kind, default, doc, set_doc, show_doc, enum=None):
        self.__doc__ = doc
        self.set_doc = set_doc
        self.show_doc = show_doc
        if enum is not None:
            super().__init__("nsb " + name, gdb.COMMAND_DATA, kind, enum)
        else:
            super().__init__("nsb " + name, gdb.COMMAND_DATA, kind)
        self.value = default

    def get_set_string(self):
        return ""

    def get_show_string(self, value):
        return "%s is %s." % (self.show_doc, value)


SETTINGS = {}


def register_settings():
    if SETTINGS:
        return
    _Prefix("set nsb", "Settings of the gdb-nsb live-patching commands.")
    _Prefix("show nsb", "Show the settings of the gdb-nsb live-patching commands.")
    SETTINGS["retries"] = _Setting(
        "retries", gdb.PARAM_ZUINTEGER, DEFAULT_TRIES,
        "Safe-point checks before nsb-patch/nsb-revert give up (default 25).",
        "Set the number of safe-point checks.", "Safe-point checks")
    SETTINGS["timeout"] = _Setting(
        "timeout", gdb.PARAM_ZUINTEGER, 60,
        "Seconds an operation may take before it is rolled back (0: no limit).",
        "Set the deadline in seconds.", "Deadline (seconds)")
    SETTINGS["strategy"] = _Setting(
        "strategy", gdb.PARAM_ENUM, "retry",
        "How to reach a safe point: retry (let the process run with growing delays) or runout\n"
        "(temporary breakpoints at the return addresses of busy frames).",
        "Set the safe-point strategy.", "Safe-point strategy", ["retry", "runout"])
    SETTINGS["allow-seccomp"] = _Setting(
        "allow-seccomp", gdb.PARAM_BOOLEAN, False,
        "Whether nsb-patch may inject system calls into a process with a seccomp filter.",
        "Allow patching under a seccomp filter.", "Patching under a seccomp filter")
    SETTINGS["breakpoints"] = _Setting(
        "breakpoints", gdb.PARAM_ENUM, "refuse",
        "What to do with a breakpoint inside the bytes a jump overwrites: refuse, or disable it.",
        "Set the breakpoint policy.", "Breakpoint policy", ["refuse", "disable"])
    SETTINGS["patch-dir"] = _PatchDir()


class _PatchDir(_Setting):
    """Where patch files are looked for by build-id (a core file from another machine)."""

    def __init__(self):
        super().__init__(
            "patch-dir", gdb.PARAM_STRING, "",
            "Directories (separated by ':') searched for patch files by build-id when the path recorded\n"
            "in the process (or core file) does not hold the patch: DIR/.build-id/xx/rest[.debug],\n"
            "DIR/<recorded file name>, then every file in DIR.",
            "Set the patch directories.", "Patch directories")

    def get_set_string(self):
        symbols.patch_dirs = patchfiles.split_dirs(self.value)
        return ""


def add_operation_options(parser, mutating=True):
    parser.add_argument("--result-file", help=argparse.SUPPRESS)
    # The runner's deadline (time.monotonic() value): --timeout then counts from when
    # the runner started GDB, so GDB's start-up and attach are inside the bound.
    parser.add_argument("--deadline-at", type=float, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--timeout", type=float, default=None, help="seconds before rolling back (set nsb timeout)")
    parser.add_argument("-v", dest="verbose", type=int, default=0, help="detail level")
    if mutating:
        parser.add_argument("--dry-run", action="store_true", help="compute and check everything, write nothing")
        parser.add_argument("--retries", type=int, default=None, help="safe-point checks (set nsb retries)")
        parser.add_argument("--strategy", choices=("retry", "runout", "run-out"), default=None,
                            help="safe-point strategy (set nsb strategy)")
        parser.add_argument("--allow-seccomp", action="store_true", help="apply under a seccomp filter")
        parser.add_argument("--breakpoints", choices=("refuse", "disable"), default=None,
                            help="breakpoint inside a jump: refuse (default) or disable it")


def options_from(args):
    timeout = args.timeout if args.timeout is not None else float(SETTINGS["timeout"].value or 0)
    if getattr(args, "deadline_at", None) is not None:
        # Already passed: a minimal bound, so the operation stops at its first deadline check.
        timeout = max(0.001, args.deadline_at - time.monotonic())
    strategy = getattr(args, "strategy", None) or SETTINGS["strategy"].value
    return engine.Options(
        dry_run=getattr(args, "dry_run", False),
        retries=getattr(args, "retries", None) if getattr(args, "retries", None) is not None
        else int(SETTINGS["retries"].value),
        timeout=timeout if timeout > 0 else None,
        strategy="runout" if strategy == "run-out" else strategy,
        allow_seccomp=getattr(args, "allow_seccomp", False) or bool(SETTINGS["allow-seccomp"].value),
        breakpoints=getattr(args, "breakpoints", None) or SETTINGS["breakpoints"].value,
        unmap=getattr(args, "unmap", False),
        verbose=args.verbose)


class NsbCommand(gdb.Command):
    """Base of the nsb-* commands.

    Subclasses set ``name`` and define ``build_parser()`` (a CommandParser)
    and ``operate(args)`` (returns an engine.Outcome).
    """

    name = None
    complete = gdb.COMPLETE_FILENAME

    def __init__(self):
        super().__init__(self.name, gdb.COMMAND_RUNNING, self.complete)
        self.dont_repeat_flag = True

    def invoke(self, argument, from_tty):
        self.dont_repeat()
        parser = self.build_parser()
        try:
            args = parser.parse_args(gdb.string_to_argv(argument))
        except _ArgumentError as e:
            if e.args[0] is None:
                return  # --help
            raise gdb.GdbError(str(e))
        result_file = getattr(args, "result_file", None)
        autoregister.operation_running = True
        try:
            outcome = self.operate(args)
        except errors.NsbError as e:
            _write_result(result_file, {"result": "error", "code": e.exit_code, "message": str(e),
                                        "error": type(e).__name__})
            raise gdb.GdbError(str(e))
        except gdb.error as e:
            msg = "GDB error: %s" % " ".join(str(e).split())
            _write_result(result_file, {"result": "error", "code": 10, "message": msg, "error": "GdbError"})
            raise gdb.GdbError(msg)
        except Exception as e:  # a bug of ours: still one line, still reported as failure
            msg = "internal error: %s: %s" % (type(e).__name__, " ".join(str(e).split()))
            _write_result(result_file, {"result": "error", "code": 10, "message": msg, "error": "InternalError"})
            raise gdb.GdbError(msg)
        finally:
            autoregister.operation_running = False
            autoregister.mark_seen()  # the command registered the patches itself
        doc = outcome.as_dict()
        _write_result(result_file, doc)
        for line in outcome.lines:
            gdb.write(line + "\n")
        if outcome.code not in (0,) and not self.nonzero_is_answer:
            raise gdb.GdbError(outcome.message)

    # nsb-check answers with its code (2: not applied); that is not a command failure.
    nonzero_is_answer = False


def _write_result(path, doc):
    if not path:
        return
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f)
    os.replace(tmp, path)
