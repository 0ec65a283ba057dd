"""One declaration per option and setting (gdb_nsb/options.py): the GDB commands' parsers and help, the
runner's parsers and --help, and the runner's forwarding into GDB must all say the same.  No GDB here:
tests/test_gdb_commands.py checks that a real GDB shows these very help texts."""

import argparse
import os
import re
import subprocess
import sys

import pytest

from gdb_nsb import options
from gdb_nsb.standalone import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMANDS = sorted(options.COMMANDS)


def runner_parser(command):
    parser = cli.build_parser(only=command)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[command]


def described(parser):
    """{dest: (flags, help, metavar, choices, type)} of a parser's options, --help left out."""
    return {a.dest: (tuple(a.option_strings), a.help, a.metavar, tuple(a.choices or ()), a.type)
            for a in parser._actions if a.dest != "help"}


def flat(text):
    return " ".join(text.split())


@pytest.mark.parametrize("command", COMMANDS)
def test_gdb_and_runner_declare_shared_options_alike(command):
    gdb_side = described(options.gdb_parser(command))
    runner_side = described(runner_parser(command))
    shared = set(gdb_side) & set(runner_side)
    for dest in shared - {"patch"}:
        assert gdb_side[dest] == runner_side[dest], dest
    # What only one face has is what the table says only that face has.
    cmd = options.COMMANDS[command]
    only_gdb = {o.attr for o, _h in cmd.option_list(options.GDB) if o.faces == {options.GDB}}
    only_runner = {o.attr for o, _h in cmd.option_list(options.RUNNER) if o.faces == {options.RUNNER}}
    assert set(gdb_side) - shared == only_gdb
    assert set(runner_side) - shared == only_runner - ({"patch"} if "patch" in shared else set())
    # The patch argument: positional in GDB, -f in the runner, with the same help.
    if "patch" in shared:
        assert gdb_side["patch"][1] == runner_side["patch"][1]


@pytest.mark.parametrize("command", COMMANDS)
def test_gdb_help_is_the_parser_help_and_names_every_option(command):
    doc = options.gdb_help(command)
    parser = options.gdb_parser(command)
    summary, rest = doc.split("\n\n", 1)
    assert summary == options.COMMANDS[command].gdb_summary and "\n" not in summary
    assert rest.startswith(parser.format_help().rstrip())
    usage = flat(doc[doc.index("usage:"):doc.index("\n\n", doc.index("usage:"))])
    for action in parser._actions:
        if action.help == argparse.SUPPRESS:
            assert action.option_strings[0] not in doc  # the runner's private channel stays private
            continue
        shown = action.option_strings[0] if action.option_strings else action.metavar
        assert shown in usage, (shown, usage)
        if action.dest != "help":
            assert flat(action.help) in flat(doc), action.dest


@pytest.mark.parametrize("command", COMMANDS)
def test_runner_help_shows_every_option_of_the_table(command):
    env = dict(os.environ, COLUMNS="80")
    out = subprocess.run([sys.executable, "-m", "gdb_nsb.standalone.cli", command, "--help"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    text = flat(out.stdout)
    assert flat(options.runner_description(command)) in text
    for opt, help_text in options.COMMANDS[command].option_list(options.RUNNER):
        assert opt.flags[-1] in text and flat(help_text) in text, opt.key


@pytest.mark.parametrize("argv", [
    ["patch", "-p", "1", "-f", "x.so", "--dry-run", "--retries", "4", "--strategy", "run-out", "--timeout", "2.5",
     "-v", "2", "--allow-seccomp"],
    ["revert", "-p", "1", "-f", "abcd1234", "--unmap", "--strategy", "retry"],
    ["check", "-p", "1", "-f", "x.so", "--allow-seccomp", "--replace"],
    ["list", "-p", "1", "--patch-dir", 'a b:c"d'],
])
def test_runner_forwards_its_options_to_the_gdb_command_unchanged(argv):
    """What the runner was given reaches nsb-COMMAND's parser as the same values."""
    command = argv[0]
    given = cli.build_parser(only=command).parse_args(argv)
    line = options.forward(command, given)
    if options.COMMANDS[command].patch is not None and options.GDB in options.COMMANDS[command].patch_faces:
        line.append(options.gdb_quote(given.patch))
    # gdb.string_to_argv splits like a shell for these quoted forms.
    import shlex
    inside = options.gdb_parser(command).parse_args(shlex.split(" ".join(line)))
    for opt, _h in options.COMMANDS[command].option_list(options.RUNNER):
        if opt.faces == options.BOTH:
            assert getattr(inside, opt.attr) == getattr(given, opt.attr) or (
                getattr(inside, opt.attr) is None and getattr(given, opt.attr) == options.runner_default(opt)), opt.key


def test_every_option_backed_by_a_setting_matches_it():
    for opt in options.OPTIONS.values():
        if opt.setting is None:
            continue
        setting = options.SETTINGS[opt.setting]
        if setting.kind == "enum":
            assert opt.choices == setting.choices, opt.key
        assert "set nsb " + setting.name in opt.help, opt.key
    assert options.SETTINGS["strategy"].choices == options.STRATEGIES == tuple(options.ENGINE_STRATEGY)


def test_settings_read_well():
    for s in options.SETTINGS.values():
        assert s.doc and s.label and s.set_doc.startswith("Set ") and s.show_doc.startswith("Show ")
        assert s.kind in ("uint", "bool", "autobool", "enum", "text")
        if s.kind == "enum":
            assert s.default in s.choices


def test_readme_names_every_setting():
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    named = re.search(r"`set nsb ([a-z|-]+)`", text).group(1).split("|")
    assert named == list(options.SETTINGS), "README should name: set nsb " + "|".join(options.SETTINGS)


def test_value_types_refuse_nonsense():
    for kind, bad in ((options.positive_seconds, "0"), (options.positive_seconds, "x"), (options.positive_int, "0"),
                      (options.detail_level, "4"), (options.detail_level, "-1")):
        with pytest.raises(argparse.ArgumentTypeError):
            kind(bad)
    assert options.positive_seconds("0.5") == 0.5 and options.positive_int("3") == 3
    assert options.detail_level("3") == 3
