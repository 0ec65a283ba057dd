"""Target and patch for the runner tests (tests/test_runner*.py).

The target has two replaceable functions: ``compute(x)`` answers
``base_value + x`` and ``scale(x)`` answers ``scale_factor*x`` (2); the patch answers
``base_value + x + 500`` and ``3*x``, so each state of each function shows a
distinct value (and a patch bound to the wrong ``base_value`` shows a wrong
number).  Two worker threads call both functions all the time.

Line protocol on stdin/stdout:
  v       -> "v C S"      compute(1) and scale(1) as the main thread sees them
  park    -> "parked"     a thread now sleeps inside compute() until unpark
  unpark  -> "unparked"
"""

import os
import shutil
import subprocess
import sys

import cbuild
import gdbharness

ROOT = cbuild.ROOT
NSB = [sys.executable, "-m", "gdb_nsb.standalone.cli"]

TARGET_SOURCE = r'''
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int base_value = 1000;
static volatile int parked;

__attribute__((noinline)) int compute(int x)
{
    if (x < 0) {
        struct timespec ms = {0, 1000 * 1000};
        while (parked)
            nanosleep(&ms, NULL);
    }
    return base_value + x;
}

static int scale_factor = 2;

__attribute__((noinline)) int scale(int x)
{
    return scale_factor * x;
}

static void *worker(void *arg)
{
    (void)arg;
    volatile int sink;
    for (;;) {
        sink = compute(1) + scale(1);
        usleep(1000);
    }
    return NULL;
}

static void *parker(void *arg)
{
    (void)arg;
    compute(-1);
    return NULL;
}

int main(void)
{
    pthread_t t[2];
    char line[64];
    setvbuf(stdout, NULL, _IOLBF, 0);
    for (long i = 0; i < 2; i++)
        pthread_create(&t[i], NULL, worker, NULL);
    printf("ready %d\n", (int)getpid());
    while (fgets(line, sizeof line, stdin)) {
        if (!strcmp(line, "v\n"))
            printf("v %d %d\n", compute(1), scale(1));
        else if (!strcmp(line, "park\n")) {
            pthread_t p;
            parked = 1;
            pthread_create(&p, NULL, parker, NULL);
            usleep(50 * 1000);
            printf("parked\n");
        } else if (!strcmp(line, "unpark\n")) {
            parked = 0;
            printf("unparked\n");
        } else
            printf("? %s", line);
    }
    return 0;
}
'''

PATCH_SOURCE = r'''
#include "vzp.h"

VZP_FILE("target.c");
VZP_STATIC_VAR_REF(int, base_value);

int compute(int x)
{
    return base_value + x + 500;
}

int scale(int x)
{
    return 3 * x;
}
'''

ORIGINAL = "v 1001 2"
PATCHED = "v 1501 3"
TARGET_FLAGS = ["-O2", "-flive-patching=inline-clone", "-g", "-pthread", "-fPIE", "-pie"]


def build_target(variant=""):
    """The compiled target; a non-empty ``variant`` gives another build (other build-id), same name."""
    return cbuild.build([("target.c", TARGET_SOURCE + variant)], TARGET_FLAGS, "target")


def make_patch(target, workdir, name="patch.so"):
    """A live patch for ``target`` in ``workdir``: the cached .so copied, then bound to ``target``."""
    from gdb_nsb.generator.manual import generate_file
    built = cbuild.build_patch([("patch.c", PATCH_SOURCE)], output_name=name)
    out = os.path.join(str(workdir), name)
    shutil.copyfile(built, out)
    generate_file(target, out)
    return out


def start(target):
    """A running target (context manager from gdbharness), ready for the line protocol."""
    return gdbharness.Target([target], ready_line="ready")


def nsb(*args, timeout=120, env=None, prefix=()):
    """Run the standalone runner (``nsb ARGS``) as users do, bounded in time."""
    e = dict(os.environ)
    e["PYTHONPATH"] = ROOT + os.pathsep + e.get("PYTHONPATH", "")
    e.update(env or {})
    return subprocess.run(list(prefix) + NSB + [str(a) for a in args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=e)


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


def nsb_json(*args, timeout=120, env=None, prefix=()):
    """Run ``nsb ARGS --json``: (exit code, document), the document checked against the schema.

    Stdout must hold exactly that one JSON document and nothing else.
    """
    import json
    r = nsb(*(list(args) + ["--json"]), timeout=timeout, env=env, prefix=prefix)
    try:
        doc = json.loads(r.stdout)
    except ValueError:
        raise AssertionError("stdout is not one JSON document (rc %d):\n%s\nstderr:\n%s" % (r.returncode, r.stdout, r.stderr))
    with open(SCHEMA) as f:
        validate(doc, json.load(f))
    assert doc["exit_code"] == r.returncode, (doc, r.stderr)
    return r.returncode, doc


def entries(target, pid):
    """{function: entry address} of compute and scale in the running ``target`` (load bias from /proc/PID/maps)."""
    from gdb_nsb.elf.image import ElfImage
    image = ElfImage(target)
    real = os.path.realpath(target)
    bias = None
    for line in gdbharness.maps(pid):
        parts = line.split(None, 5)
        if len(parts) == 6 and parts[5] == real and int(parts[2], 16) == 0:
            bias = int(parts[0].split("-")[0], 16)
            break
    assert bias is not None, "target not mapped in %d" % pid
    syms = {s.name: s.value for s in image.symtab if s.name in ("compute", "scale")}
    return {name: bias + value for name, value in syms.items()}


def original_bytes(target, name, size=5):
    """The first ``size`` bytes of function ``name`` in the target file."""
    from gdb_nsb.elf.image import ElfImage
    image = ElfImage(target)
    sym = next(s for s in image.symtab if s.name == name)
    return image.read_vaddr(sym.value, size)
