"""The harness itself: a real target, a real GDB attach, the target left running."""

import targets as T
from targets import Target, run_gdb, wait_running

SRC = r'''
#include <stdio.h>
#include <unistd.h>
int main(void) { char buf[64]; printf("ready\n"); fflush(stdout);
  while (fgets(buf, sizeof buf, stdin)) { printf("echo %s", buf); fflush(stdout); } return 0; }
'''


def test_attach_detach_leaves_target_running():
    exe = T.build([("echo.c", SRC)], ["-O2", "-g"], "echo")
    with Target([exe], ready_line="ready") as t:
        r = run_gdb(t.pid, python='''
            import gdb, json
            print("NSB-RESULT:" + json.dumps({"threads": len(gdb.selected_inferior().threads())}))
        ''', timeout=60)
        assert r.results == [{"threads": 1}], r
        assert wait_running(t.pid)
        assert t.ask("hi") == "echo hi"
