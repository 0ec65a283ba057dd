"""What every nsb-* command shares: argument parsing, settings, errors, results.

Arguments are parsed with argparse (GDB's own quoting via gdb.string_to_argv)
from the parsers gdb_nsb/options.py declares; a parse error or a user error
(errors.NsbError) becomes one gdb.GdbError line.  Any other exception is a bug:
one line too, and with `set nsb debug on` its traceback before it.  The runner
passes ``--result-file F``: the command then writes its outcome there as JSON,
also when it fails, so a failure inside GDB never looks like success.
"""

import argparse
import json
import os
import time
import traceback

import gdb

from gdb_nsb import errors, options, patchfiles
from gdb_nsb.process import autoregister, engine, run_windows, symbols
from gdb_nsb.process.quiet import quiet_command, report_stop


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


_KINDS = {"uint": gdb.PARAM_ZUINTEGER, "bool": gdb.PARAM_BOOLEAN, "enum": gdb.PARAM_ENUM, "text": gdb.PARAM_STRING,
          "autobool": gdb.PARAM_AUTO_BOOLEAN}


class _Setting(gdb.Parameter):
    """One `set nsb NAME`, as options.SETTINGS declares it."""

    def __init__(self, spec):
        self.spec = spec
        self.__doc__ = spec.doc
        self.set_doc = spec.set_doc
        self.show_doc = spec.show_doc
        if spec.kind == "enum":
            super().__init__("nsb " + spec.name, gdb.COMMAND_DATA, _KINDS[spec.kind], list(spec.choices))
        else:
            super().__init__("nsb " + spec.name, gdb.COMMAND_DATA, _KINDS[spec.kind])
        self.value = spec.default

    def get_set_string(self):
        if self.spec.name == "patch-dir":
            symbols.patch_dirs = patchfiles.split_dirs(self.value)
        return ""

    def get_show_string(self, value):
        return "%s is %s." % (self.spec.label, value)


SETTINGS = {}


def register_settings():
    if SETTINGS:
        return
    _Prefix("set nsb", options.SETTINGS_PREFIX_DOC)
    _Prefix("show nsb", "Show the settings of the gdb-nsb live-patching commands.")
    for spec in options.SETTINGS.values():
        SETTINGS[spec.name] = _Setting(spec)


def options_from(args):
    """The engine's options: what the command line gave, else the `set nsb` settings."""
    def given_or_setting(attr, setting):
        value = getattr(args, attr, None)
        return value if value is not None else SETTINGS[setting].value

    timeout = float(given_or_setting("timeout", "timeout") or 0)
    if getattr(args, "deadline_at", None) is not None:
        # Already passed: a minimal bound, so the operation stops at its first deadline check.
        timeout = max(0.001, args.deadline_at - time.monotonic())
    return engine.Options(
        dry_run=getattr(args, "dry_run", False),
        retries=int(given_or_setting("retries", "retries")),
        timeout=timeout if timeout > 0 else None,
        strategy=options.ENGINE_STRATEGY[given_or_setting("strategy", "strategy")],
        allow_seccomp=getattr(args, "allow_seccomp", False) or bool(SETTINGS["allow-seccomp"].value),
        breakpoints=given_or_setting("breakpoints", "breakpoints"),
        unmap=getattr(args, "unmap", False),
        replace=getattr(args, "replace", False),
        verbose=args.verbose,
        callback_timeout=float(given_or_setting("callback_timeout", "callback-timeout") or 10))


class NsbCommand(gdb.Command):
    """Base of the nsb-* commands.

    Subclasses set ``operation`` (a key of options.COMMANDS: their parser and
    help come from there) and define ``operate(args)`` (returns an engine.Outcome).
    """

    operation = None
    complete = gdb.COMPLETE_FILENAME

    def __init__(self):
        self.__doc__ = options.gdb_help(self.operation)
        super().__init__("nsb-" + self.operation, gdb.COMMAND_RUNNING, self.complete)
        self.dont_repeat_flag = True

    def build_parser(self):
        return options.gdb_parser(self.operation, CommandParser)

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
            with quiet_command(), run_windows.policy(_run_windows_allowed(from_tty)):
                outcome = self.operate(args)
        except errors.StoppedByUser as e:
            # The user's breakpoint stopped the process: show that stop as GDB shows one.
            _write_result(result_file, {"result": "error", "code": e.exit_code, "message": str(e),
                                        "error": type(e).__name__})
            report_stop(e)
            raise gdb.GdbError(str(e))
        except errors.NsbError as e:
            _write_result(result_file, {"result": "error", "code": e.exit_code, "message": str(e),
                                        "error": type(e).__name__})
            raise gdb.GdbError(str(e))
        except Exception as e:  # not one of our typed errors: a bug (or GDB's), still reported as failure
            if isinstance(e, gdb.error):
                msg, kind = "GDB error: %s" % " ".join(str(e).split()), "GdbError"
            else:
                msg, kind = "internal error: %s: %s" % (type(e).__name__, " ".join(str(e).split())), "InternalError"
            _write_result(result_file, {"result": "error", "code": 10, "message": msg, "error": kind})
            if SETTINGS["debug"].value:
                gdb.write(traceback.format_exc(), gdb.STDERR)
                raise gdb.GdbError(msg)
            raise gdb.GdbError(msg + " (set nsb debug on shows its traceback)")
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


def _run_windows_allowed(from_tty):
    """``set nsb run-windows``: auto lets the process run only for commands not typed at the prompt."""
    value = SETTINGS["run-windows"].value
    return (not from_tty) if value is None else bool(value)


def _write_result(path, doc):
    if not path:
        return
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f)
    os.replace(tmp, path)
