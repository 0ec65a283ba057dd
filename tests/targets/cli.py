"""Run the standalone runner (``nsb``) as users do; every call gives one ``Run``.

The runner is ``python -m gdb_nsb.standalone.cli`` from the checkout, in a
session of its own (a hang kills its whole group).  With ``--json`` among the
arguments, stdout must be exactly one JSON document that matches
gdb_nsb/data/result.schema.json and whose ``exit_code`` is the exit status.
"""

import json
import os
import signal
import subprocess
import sys

from .cbuild import ROOT

NSB = [sys.executable, "-m", "gdb_nsb.standalone.cli"]
GRACE = 60  # past the runner's own --timeout (it adds its grace, 15 s, before it kills GDB)


class Run:
    """One finished runner call: ``returncode``, ``stdout``, ``stderr``; with --json, ``doc`` (the whole
    document) and ``process`` (the first process's part, or the document when no process was reached)."""

    def __init__(self, argv, returncode, stdout, stderr):
        self.argv = argv
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        self.doc = self.process = None
        if "--json" in argv:
            try:
                self.doc = json.loads(stdout)
            except ValueError:
                raise AssertionError("stdout is not one JSON document: %r" % self)
            with open(SCHEMA) as f:
                validate(self.doc, json.load(f))
            assert self.doc["exit_code"] == returncode, self
            procs = self.doc.get("processes")
            self.process = procs[0] if procs else self.doc

    @property
    def output(self):
        return self.stdout + self.stderr

    def __repr__(self):
        return "nsb %s -> exit %s\n--- stdout ---\n%s\n--- stderr ---\n%s" % (
            " ".join(self.argv), self.returncode, self.stdout, self.stderr)


def only_process(doc):
    """The part of a --json document about its one process (there must be exactly one)."""
    assert len(doc["processes"]) == 1, doc
    return doc["processes"][0]


def _runner_timeout(argv):
    if "--timeout" in argv:
        return float(argv[argv.index("--timeout") + 1])
    return 60.0


def start_nsb(*args, env=None, prefix=(), stdout=subprocess.PIPE, stderr=subprocess.PIPE):
    """The runner started in the background (``Popen``, own session); ``finish`` collects it.

    ``stdout``/``stderr``: where its output goes instead of pipes (a terminal, for a test of what it prints there).
    """
    full_env = dict(os.environ)
    full_env.pop("NSB_FAULT", None)  # fault injection only where a test asks for it
    full_env["PYTHONPATH"] = ROOT + os.pathsep + full_env.get("PYTHONPATH", "")
    full_env.update(env or {})
    argv = [str(a) for a in args]
    p = subprocess.Popen(list(prefix) + NSB + argv, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
                         text=True, cwd=ROOT, env=full_env, start_new_session=True)
    p.nsb_argv = argv
    return p


def finish(proc, timeout=None):
    """Wait for a runner from ``start_nsb`` (bounded: its --timeout plus a grace); its ``Run``."""
    bound = timeout if timeout is not None else _runner_timeout(proc.nsb_argv) + GRACE
    try:
        out, err = proc.communicate(timeout=bound)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise TimeoutError("nsb %s overran %ss: %s %s" % (" ".join(proc.nsb_argv), bound, out, err))
    return Run(proc.nsb_argv, proc.returncode, out, err)


def nsb(*args, timeout=None, env=None, prefix=()):
    """Run ``nsb ARGS`` and wait (at most ``timeout``, by default the runner's --timeout plus a grace)."""
    return finish(start_nsb(*args, env=env, prefix=prefix), timeout)


SCHEMA = os.path.join(ROOT, "gdb_nsb", "data", "result.schema.json")

_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}


def validate(value, schema, where="$"):
    """Check ``value`` against the subset of JSON Schema result.schema.json uses (raises AssertionError)."""
    kinds = schema.get("type")
    if kinds is not None:
        kinds = kinds if isinstance(kinds, list) else [kinds]

        def is_kind(k):
            if k == "integer":
                return isinstance(value, int) and not isinstance(value, bool)
            if k == "number":
                return isinstance(value, (int, float)) and not isinstance(value, bool)
            return isinstance(value, _TYPES[k])
        assert any(is_kind(k) for k in kinds), "%s: %r is not %s" % (where, value, kinds)
    if "enum" in schema:
        assert value in schema["enum"], "%s: %r not in %s" % (where, value, schema["enum"])
    if "minimum" in schema:
        assert value >= schema["minimum"], "%s: %r < %r" % (where, value, schema["minimum"])
    if "maximum" in schema:
        assert value <= schema["maximum"], "%s: %r > %r" % (where, value, schema["maximum"])
    if isinstance(value, dict):
        for key in schema.get("required", []):
            assert key in value, "%s: missing %r" % (where, key)
        props = schema.get("properties", {})
        for key, item in value.items():
            if key in props:
                validate(item, props[key], "%s.%s" % (where, key))
            elif isinstance(schema.get("additionalProperties"), dict):
                validate(item, schema["additionalProperties"], "%s.%s" % (where, key))
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            validate(item, schema["items"], "%s[%d]" % (where, i))
