"""Every option of the nsb-* GDB commands and of the `nsb` runner, and every `set nsb` setting, declared once.

Both faces are built from these tables: the GDB commands' argparse parsers and their help (a
command's docstring is its parser's help, as pwndbg does it), the runner's subcommand parsers and
their --help, the `set/show nsb` parameters (commands/common.py turns SETTINGS into gdb.Parameter
objects), and the runner's forwarding of its options to the nsb-* command it runs inside GDB.
Pure: no gdb import.
"""

import argparse
from typing import Any, Dict, FrozenSet, NamedTuple, Optional, Tuple

# The tables are NamedTuples, not dataclasses: the runner imports this module before it starts GDB,
# and `dataclasses` (with `inspect`) cost ~5 ms of every command's latency there.

# Safe-point checks before an operation gives up (`set nsb retries`, --retries).
DEFAULT_TRIES = 25

GDB, RUNNER = "gdb", "runner"
BOTH = frozenset((GDB, RUNNER))
HELP_WIDTH = 100  # GDB keeps a command's help as a fixed string: wrap it the same on every terminal

# The user-facing safe-point strategy names, and the engine's name for each.
STRATEGIES = ("retry", "run-out")
ENGINE_STRATEGY = {"retry": "retry", "run-out": "runout"}


class Setting(NamedTuple):
    """`set nsb NAME VALUE`: a GDB parameter.  ``kind``: uint, bool, autobool, enum or text."""

    name: str
    kind: str
    default: Any
    label: str          # `show nsb NAME` says "<label> is <value>."
    doc: str            # `help set nsb NAME`
    choices: Tuple[str, ...] = ()

    @property
    def set_doc(self):
        return "Set %s." % (self.label[0].lower() + self.label[1:])

    @property
    def show_doc(self):
        return "Show %s." % (self.label[0].lower() + self.label[1:])


SETTINGS_PREFIX_DOC = "Settings of the gdb-nsb live-patching commands."

_SETTINGS = (
    Setting("retries", "uint", DEFAULT_TRIES, "Safe-point checks",
            "Safe-point checks before nsb-patch/nsb-revert give up, and nsb-check's looks (default %d)."
            % DEFAULT_TRIES),
    Setting("timeout", "uint", 60, "Deadline (seconds)",
            "Seconds an operation may take before it is rolled back (0: no limit)."),
    Setting("callback-timeout", "uint", 10, "Time limit of a patch callback (seconds)",
            "Seconds a callback of a patch (VZP_PRE_PATCH ...) may run before it is stopped and fails\n"
            "(docs/CALLBACKS.md); never more than what is left of the operation's deadline."),
    Setting("strategy", "enum", "retry", "Safe-point strategy",
            "How to reach a safe point: retry (let the process run with growing delays) or run-out\n"
            "(temporary breakpoints at the return addresses of busy frames).", STRATEGIES),
    Setting("allow-seccomp", "bool", False, "Patching under a seccomp filter",
            "Whether nsb-patch may inject system calls into a process with a seccomp filter."),
    Setting("breakpoints", "enum", "refuse", "Breakpoint policy",
            "What to do with a breakpoint inside the bytes a jump overwrites: refuse, or disable that location (the\n"
            "breakpoint and its other locations stay enabled).",
            ("refuse", "disable")),
    Setting("patch-dir", "text", "", "Patch directories",
            "Directories (separated by ':') searched for patch files by build-id when the path recorded\n"
            "in the process (or core file) does not hold the patch: DIR/.build-id/xx/rest[.debug],\n"
            "DIR/<recorded file name>, then every file in DIR."),
    Setting("run-windows", "autobool", None, "Run windows at the prompt",
            "Whether nsb-* commands may let the process run between safe-point tries (short run windows).\n"
            "auto (default): not for a command typed at the GDB prompt, where the user stopped the program\n"
            "(the command then succeeds at the current stop or ends busy); on for scripts, gdb -batch and the\n"
            "nsb runner."),
    Setting("debug", "bool", False, "Tracebacks of internal errors",
            "Whether an internal error (a bug of gdb-nsb) shows its Python traceback.\n"
            "User errors (no process, bad patch, busy ...) stay one line either way."),
)
SETTINGS: Dict[str, Setting] = {s.name: s for s in _SETTINGS}


# ------------------------------------------------------------------ value types (argparse `type=`)

def positive_seconds(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("not a number of seconds: %r" % text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be more than 0 seconds: %r" % text)
    return value


def _whole_number(text, low, high=None):
    """``text`` as an int in [low, high] (no upper bound when ``high`` is None), or argparse's error."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("not a whole number: %r" % text)
    if high is None and value < low:
        raise argparse.ArgumentTypeError("must be at least %d: %r" % (low, text))
    if high is not None and not low <= value <= high:
        raise argparse.ArgumentTypeError("must be %d to %d: %r" % (low, high, text))
    return value


def positive_int(text):
    return _whole_number(text, 1)


def detail_level(text):
    return _whole_number(text, 0, 3)


# The runner's default niceness: normal.  The scheduling policy (POLICIES) is what raises it under load.
DEFAULT_NICE = 0

# The runner's scheduling policy for itself and the GDB it starts (standalone/gdbrun.set_policy):
# realtime is SCHED_RR at the lowest real-time priority, when permitted.  Under CPU load a GDB in a
# session of its own waited seconds for each few milliseconds of CPU, whatever the niceness
# (bench/load_revert.py, docs/TRUST.md).
# auto (the default) is realtime only on a machine busier than it has CPUs for (standalone/gdbrun.busy):
# on a quiet one, real-time start-up work (runner, GDB, GDB's DWARF threads) took every CPU from the
# target's threads and made its largest pause 20-23 ms instead of 14 (bench, session 5).
POLICIES = ("auto", "realtime", "normal")
DEFAULT_POLICY = "auto"


def policy_in(argv):
    """The --sched value of a runner command line, read before parsing it (the runner raises itself first
    thing: under load, parsing and importing alone waited up to 29 s); DEFAULT_POLICY when not given.
    A value that is not a policy counts as normal (the parser then refuses it)."""
    policy = DEFAULT_POLICY
    for i, word in enumerate(argv):
        if word == "--":
            break
        if word == "--sched":
            policy = argv[i + 1] if i + 1 < len(argv) else "normal"
        elif word.startswith("--sched="):
            policy = word.split("=", 1)[1]
    return policy if policy in POLICIES else "normal"


def niceness(text):
    return _whole_number(text, -20, 19)


# ------------------------------------------------------------------ options

class Option(NamedTuple):
    """One option.  ``kind``: flag (store_true), value (one argument), list (repeatable)."""

    key: str
    flags: Tuple[str, ...]
    help: str
    kind: str = "flag"
    faces: FrozenSet[str] = BOTH
    metavar: Optional[str] = None
    type: Any = None
    choices: Tuple[str, ...] = ()
    default: Any = None
    setting: Optional[str] = None   # in GDB, a value not given comes from `set nsb SETTING`
    dest: Optional[str] = None
    hidden: bool = False            # the runner's private channel to the GDB command
    runner_needs: bool = False      # the runner uses the value itself: it defaults to the setting's default

    @property
    def attr(self):
        return self.dest or self.flags[-1].lstrip("-").replace("-", "_")


def _opt(key, flags, help, **kw):
    return Option(key, tuple(flags), help, **kw)


OPTIONS: Dict[str, Option] = {o.key: o for o in (
    _opt("pid", ["-p", "--pid"], "target process; repeat or separate with commas for several",
         kind="list", faces=frozenset((RUNNER,)), metavar="PID[,PID...]"),
    _opt("file", ["-f", "--file"], "live patch file", kind="value", faces=frozenset((RUNNER,)),
         metavar="PATCH", dest="patch"),
    _opt("json", ["--json"], "print one JSON document on stdout (schema: gdb_nsb/data/result.schema.json)",
         faces=frozenset((RUNNER,))),
    _opt("dry-run", ["--dry-run"], "compute and check everything, write nothing"),
    _opt("retries", ["--retries"], "safe-point checks before giving up (default %d; set nsb retries)" % DEFAULT_TRIES,
         kind="value", metavar="N", type=positive_int, setting="retries"),
    _opt("strategy", ["--strategy"], "how to reach a safe point: retry with growing delays, or run busy threads "
         "out (default retry; set nsb strategy)", kind="value", choices=STRATEGIES, setting="strategy"),
    _opt("timeout", ["--timeout"], "hard bound: roll back and detach when it passes (default %d; set nsb timeout)"
         % SETTINGS["timeout"].default, kind="value", metavar="SECONDS", type=positive_seconds, setting="timeout",
         runner_needs=True),  # the runner kills GDB past the deadline
    _opt("callback-timeout", ["--callback-timeout"], "seconds a callback of the patch may run before it fails "
         "(default %d; set nsb callback-timeout)" % SETTINGS["callback-timeout"].default, kind="value",
         metavar="SECONDS", type=positive_seconds, setting="callback-timeout"),
    _opt("nice", ["--nice"], "scheduling niceness of the runner and its GDB's session (default %d; -10, as "
         "root: one more share of the CPU for GDB's session when --sched is normal)"
         % DEFAULT_NICE, kind="value", metavar="N", type=niceness, default=DEFAULT_NICE, faces=frozenset((RUNNER,))),
    _opt("sched", ["--sched"], "scheduling of the runner and of the GDB it starts: auto (realtime when more "
         "tasks want a CPU than twice the CPUs, else normal), realtime (SCHED_RR at the "
         "lowest real-time priority, as root: under CPU load a command on one process lasts about what it lasts "
         "on a quiet machine; several processes stay normal) or normal (default %s)" % DEFAULT_POLICY,
         kind="value", choices=POLICIES, default=DEFAULT_POLICY, faces=frozenset((RUNNER,))),
    _opt("remote", ["--remote"], "reach the process through a running gdbserver (with -p: extended-remote + attach)",
         kind="value", faces=frozenset((RUNNER,)), metavar="HOST:PORT"),
    _opt("verbose", ["-v"], "detail level (0-3)", kind="value", metavar="N", type=detail_level, default=0,
         dest="verbose"),
    _opt("allow-seccomp", ["--allow-seccomp"], "apply even though the process has a seccomp filter "
         "(set nsb allow-seccomp)", setting="allow-seccomp"),
    _opt("breakpoints", ["--breakpoints"], "a breakpoint inside the bytes a jump overwrites: refuse (default), "
         "or disable that location (set nsb breakpoints)",
         kind="value", faces=frozenset((GDB,)), choices=("refuse", "disable"),
         setting="breakpoints"),
    _opt("unmap", ["--unmap"], "also unmap the patch's memory (after a scan finds no pointer into it)"),
    _opt("replace", ["--replace"], "atomic replace: in the same stop, take out every patch applied to the same "
         "target object (a cumulative patch does this without the option)"),
    _opt("all-of", ["--all-of"], "also work on every process that maps an object with the patch's target build-id",
         faces=frozenset((RUNNER,))),
    _opt("patch-dir", ["--patch-dir"], "also look for patch files here, by build-id (DIR/.build-id/xx/rest, "
         "file name; set nsb patch-dir)", kind="value", metavar="DIR[:DIR...]", default="", setting="patch-dir"),
    _opt("result-file", ["--result-file"], "", kind="value", faces=frozenset((GDB,)), hidden=True),
    # The runner's deadline (a time.monotonic() value): --timeout then counts from when the runner
    # started GDB, so GDB's start-up and attach are inside the bound.
    _opt("deadline-at", ["--deadline-at"], "", kind="value", faces=frozenset((GDB,)), type=float, hidden=True),
)}


# ------------------------------------------------------------------ commands

class Command(NamedTuple):
    """One operation, as `nsb-NAME` in GDB and `nsb NAME` in the runner.

    ``options``: keys of OPTIONS in help order, or (key, help for this command).  ``patch``: the
    patch argument as (metavar, help), positional in GDB and ``-f`` in the runner; ``patch_faces``
    where it exists.
    """

    name: str
    gdb_summary: str
    runner_summary: str
    about: str
    options: Tuple[Any, ...]
    patch: Optional[Tuple[str, str]] = ("PATCH", "live patch file")
    patch_faces: FrozenSet[str] = BOTH
    gdb_about: str = ""
    runner_about: str = ""

    def option_list(self, face):
        """[(Option, help)] of this command in ``face``, hidden ones included."""
        out = []
        for entry in self.options + ("result-file", "deadline-at"):
            key, text = entry if isinstance(entry, tuple) else (entry, None)
            opt = OPTIONS[key]
            if face in opt.faces:
                out.append((opt, text if text is not None else opt.help))
        return out

    def description(self, face):
        extra = self.gdb_about if face == GDB else self.runner_about
        return self.about + ("\n\n" + extra if extra else "")


_RUNNER_COMMON = ("pid", "json", "remote", "nice", "sched")

COMMANDS: Dict[str, Command] = {c.name: c for c in (
    Command(
        "patch", "Apply a live patch to the process being debugged.", "apply a live patch to running processes",
        "PATCH is a patch .so with a vzpatch section (made by `nsb generate`).  All threads stay\n"
        "stopped while the patch is mapped, bound and the replaced functions' entries are redirected;\n"
        "it happens only at a safe point (no thread inside a replaced function).  On any failure\n"
        "everything is rolled back.  With --replace, or for a cumulative patch (VZP_CUMULATIVE), every\n"
        "patch applied to the same target object is taken out in the same stop, and functions only\n"
        "they changed get their original code back (docs/patch-series.md).  A patch that needs another\n"
        "patch or a state (VZP_NEEDS_PATCH, VZP_NEEDS_STATE) is refused while it is missing (exit 20).",
        _RUNNER_COMMON + ("file", "dry-run", "replace", "retries", "strategy", "timeout", "callback-timeout", "verbose",
                          "allow-seccomp",
                          "breakpoints", ("all-of", "also patch every process that maps an object with the "
                                                    "patch's target build-id"))),
    Command(
        "revert", "Take an applied live patch back.", "take an applied live patch back",
        "Restores, at a safe point (no thread inside the patch's code), the layer below the patch for\n"
        "each function it redirects: the original code, or the jump of the patch under it.  Layers can\n"
        "be reverted in any order.  The patch's memory stays mapped (inactive) so that pointers the\n"
        "program kept into it stay valid; re-applying reuses it.  --unmap also unmaps it, after\n"
        "checking that no register or writable memory points into it.  The patch is named by its file\n"
        "or by its build-id (a prefix is enough when it is unambiguous in the process).  Refused\n"
        "(exit 20) while an applied patch needs it.",
        _RUNNER_COMMON + (("file", "live patch file, or its build-id"), "dry-run", "retries", "strategy", "timeout",
                          "callback-timeout", "verbose", "allow-seccomp", "breakpoints", "unmap",
                          ("all-of", "also revert in every process that carries the patch (found without "
                                     "attaching; with --unmap, inactive records too)")),
        patch=("PATCH|BUILD-ID", "live patch file, or its build-id"),
        runner_about="Exit 0: reverted.  2: the patch is not applied there."),
    Command(
        "list", "List the live patches of the process being debugged.",
        "list the live patches applied in processes",
        "For each patch: build-id, file, target object and its build-id, load range, state (active /\n"
        "inactive / target unloaded / partial) and every redirected function with its layer (1 = just\n"
        "above the original code).  A patch whose file is not found (recorded path, then the patch\n"
        "directories of --patch-dir and `set nsb patch-dir`, by build-id) is listed with \"patch file\n"
        "not found\": its frames have no symbols.",
        _RUNNER_COMMON + (("file", "host-wide list only: the processes that map this patch's target or carry it"),
                          "timeout", "verbose", "patch-dir"),
        patch_faces=frozenset((RUNNER,)),
        gdb_about="Works on a core file too (post-mortem).",
        runner_about="Without -p (and without --remote): every process on this host that carries live patches,\n"
                     "found by the registry in its memory map and read from /proc/PID/mem without attaching,\n"
                     "so no process is paused.  With -f PATCH, only the processes that map the patch's\n"
                     "target or carry the patch, each with the patch's state there (applied, partial,\n"
                     "inactive, not applied).\n\n"
                     "Exit 0: listed (also when there are none).  8: a patch is in a partial state.\n"
                     "16: the in-process registry is corrupt."),
    Command(
        "check", "Check a live patch against the process being debugged, changing nothing.",
        "is a patch applied, could it be applied now, and why not",
        "Says whether PATCH is applied (or partially applied), and if not, whether it could be applied\n"
        "right now, with every reason it could not: target not mapped, build-id mismatch, entry bytes\n"
        "not as expected, unresolvable symbol, jump does not fit, threads inside functions it replaces,\n"
        "a seccomp filter, another tracer, ptrace_scope.  When a thread inside a replaced function is all\n"
        "that stands in the way, it looks again at later moments, as an apply retries: locally the process\n"
        "runs untraced in between (GDB detaches and attaches again: nothing of the tool is in it, not even\n"
        "GDB's breakpoints).  Remotely, and at the GDB prompt unless `set nsb run-windows on`, the\n"
        "answer is one look and says \"busy at this instant\".  It judges what `patch` with the same\n"
        "options would do: a cumulative patch (VZP_CUMULATIVE), or any patch with --replace, as the\n"
        "atomic replace of every patch applied to its target (their code counts as busy too, and the\n"
        "dependency rules see them leave: exit 20); --json's \"plan\" is that of `patch --dry-run`.",
        _RUNNER_COMMON + ("file", ("replace", "judge an atomic replace, as `patch --replace` would do it (a "
                                              "cumulative patch is judged so without the option)"),
                          "timeout", "verbose",
                          ("retries", "looks at the threads before answering busy (default %d; set nsb retries)"
                           % DEFAULT_TRIES),
                          ("allow-seccomp", "do not count a seccomp filter as a reason it cannot apply"),
                          ("all-of", "also check every process that maps an object with the patch's target "
                                     "build-id")),
        runner_about="Exit 0: applied.  2: not applied, applicable now.  3: not applied, not applicable now\n"
                     "(busy: a thread is inside a function the patch replaces).  8: partially applied.  Other\n"
                     "codes name the reason it can never apply here (4 mismatch, 14 environment ...)."),
)}


# ------------------------------------------------------------------ parsers and help

def _formatter(prog):
    return argparse.RawDescriptionHelpFormatter(prog, width=HELP_WIDTH)


def add_arguments(parser, command, face):
    """Add ``command``'s options for ``face`` (GDB or RUNNER) to ``parser``."""
    cmd = COMMANDS[command]
    for opt, text in cmd.option_list(face):
        kw = {"dest": opt.attr}
        kw["help"] = argparse.SUPPRESS if opt.hidden else text
        if opt.kind == "flag":
            kw["action"] = "store_true"
        else:
            if opt.kind == "list":
                kw["action"] = "append"
            if opt.metavar:
                kw["metavar"] = opt.metavar
            if opt.type is not None:
                kw["type"] = opt.type
            if opt.choices:
                kw["choices"] = opt.choices
                kw.setdefault("metavar", "|".join(opt.choices))
        kw["default"] = runner_default(opt) if face == RUNNER else opt.default
        if opt.kind == "list":
            kw["default"] = []
        elif opt.kind == "flag":
            kw["default"] = False
        parser.add_argument(*opt.flags, **kw)
    if cmd.patch is not None and face == GDB and GDB in cmd.patch_faces:
        metavar, text = cmd.patch
        parser.add_argument("patch", metavar=metavar, help=text)


def runner_default(opt):
    """The runner has no settings: GDB applies the setting's default to what it does not forward, unless the
    runner needs the value itself."""
    if opt.runner_needs:
        return float(SETTINGS[opt.setting].default)
    return opt.default


def gdb_parser(command, parser_class=argparse.ArgumentParser):
    """The argparse parser of `nsb-COMMAND` inside GDB."""
    cmd = COMMANDS[command]
    p = parser_class(prog="nsb-" + command, description=cmd.description(GDB), formatter_class=_formatter)
    add_arguments(p, command, GDB)
    return p


def gdb_help(command):
    """The docstring of `nsb-COMMAND`: its one-line summary, then its parser's help."""
    cmd = COMMANDS[command]
    parser_help = gdb_parser(command).format_help().rstrip()
    return cmd.gdb_summary + "\n\n" + parser_help + "\n\nSettings: show nsb (help set nsb)."


def runner_description(command):
    return COMMANDS[command].description(RUNNER)


# ------------------------------------------------------------------ runner -> GDB command

def gdb_quote(arg):
    """Quote one argument for a GDB command line parsed with gdb.string_to_argv."""
    return '"%s"' % str(arg).replace("\\", "\\\\").replace('"', '\\"')


def forward(command, args):
    """The nsb-COMMAND arguments that carry the runner's options (those both faces have) into GDB."""
    out = []
    for opt, _text in COMMANDS[command].option_list(RUNNER):
        if opt.faces != BOTH or opt.hidden:
            continue
        value = getattr(args, opt.attr, None)
        flag = opt.flags[-1]
        if opt.kind == "flag":
            if value:
                out.append(flag)
        elif value is not None and value != opt.default:
            if isinstance(value, float):
                text = "%g" % value
            elif isinstance(value, int):
                text = str(value)
            else:
                text = gdb_quote(value)
            out.append("%s %s" % (flag, text))
    return out
