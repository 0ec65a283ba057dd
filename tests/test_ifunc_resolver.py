"""An IFUNC no loaded object resolved yet: its resolver runs in the process, inside the stop.

The target links libm but never calls ``ceil`` (nothing binds it: no GOT slot holds its
implementation); the -O0 patch calls it.  Before, ``nsb patch`` refused (exit 13, "no resolved
slot"); now the resolver runs as lazy binding would run it, and the patch works.  sqlite3's auto
mode met this on real code (libsqlite3's -O2 build inlines libm's ceil and floor).
"""

import pytest

import targets as T
from targets import nsb
from targets.process import Target

pytestmark = [pytest.mark.gdb, pytest.mark.timeout(240)]

TARGET_C = r'''
#include <math.h>
#include <stdio.h>

volatile double input = 2.5;

__attribute__((noinline)) long compute(double x)
{
    return (long)(x * 10);
}

int main(void)
{
    char line[64];
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("ready %f\n", sqrt(input));  /* libm is needed, and no IFUNC of it is bound */
    while (fgets(line, sizeof line, stdin))
        printf("v %ld\n", compute(input));
    return 0;
}
'''

PATCH_C = r'''
#include <math.h>

long compute(double x)
{
    return (long)ceil(x) * 100;
}
'''


def _value(t):
    line = t.ask("v")
    assert line.startswith("v "), line
    return int(line.split()[1])


@pytest.mark.parametrize("flavor", ["pie", "nopie"])
def test_an_unbound_ifunc_is_resolved_in_the_process(flavor, tmp_path):
    flags = ["-O2", "-flive-patching=inline-clone", "-g", "-Wl,--no-as-needed", "-lm"] + T.FLAVOR_FLAGS[flavor]
    exe = T.build([("ifunc_target.c", TARGET_C)], flags, "ifunc-target-" + flavor)
    patch = T.bind_patch(exe, [("ifunc_patch.c", PATCH_C)], "ifunc_patch.so", workdir=tmp_path)
    with Target([exe], ready_line="ready") as t:
        assert _value(t) == 25
        run = nsb("patch", "-p", t.pid, "-f", patch, "--dry-run")
        assert run.returncode == 0 and "IFUNC resolver of ceil runs in the process at apply" in run.stdout, (
            run.stdout + run.stderr)
        run = nsb("check", "-p", t.pid, "-f", patch, "--json")
        assert run.returncode == 2, run.stdout + run.stderr
        run = nsb("patch", "-p", t.pid, "-f", patch)
        assert run.returncode == 0 and "IFUNC ceil resolved in the process" in run.stdout, run.stdout + run.stderr
        assert _value(t) == 300
        run = nsb("revert", "-p", t.pid, "-f", patch)
        assert run.returncode == 0, run.stdout + run.stderr
        assert _value(t) == 25
        assert T.tracer_pid(t.pid) == 0 and t.alive()
