"""Environment checks: the pure assessment, and a live target with a seccomp filter."""

import os

import pytest

from gdb_nsb.process import environment as E

STATUS = """Name:\tt
State:\tt (tracing stop)
TracerPid:\t%(tracer)s
Seccomp:\t%(mode)s
Seccomp_filters:\t%(filters)s
"""


def _status(tracer=0, mode=0, filters=0):
    return STATUS % {"tracer": tracer, "mode": mode, "filters": filters}


def codes(findings):
    return [f.code for f in findings]


def test_clean_process_has_no_findings():
    assert E.assess(_status(tracer=4242), expected_tracers={4242}, ptrace_scope="0") == []


def test_seccomp_filter_and_strict_refuse():
    f = E.assess(_status(mode=2, filters=3))
    assert codes(f) == ["seccomp-filter"] and f[0].severity == E.SEVERITY_REFUSE
    assert "3 installed" in f[0].message
    assert codes(E.assess(_status(mode=1))) == ["seccomp-strict"]


def test_tracers():
    assert codes(E.assess(_status(tracer=77), expected_tracers={4242})) == ["other-tracer"]
    # Through gdbserver the tracer is the server, whose pid we do not know: info only.
    f = E.assess(_status(tracer=77), expected_tracers=None)
    assert codes(f) == ["tracer"] and f[0].severity == E.SEVERITY_INFO


def test_ptrace_scope():
    assert codes(E.assess(_status(), {0}, ptrace_scope="1")) == ["ptrace-scope"]
    f = E.assess(_status(), {0}, ptrace_scope="3")
    assert f[0].severity == E.SEVERITY_REFUSE
    assert E.assess(_status(), {0}, ptrace_scope=None) == []


def test_missing_seccomp_field_is_reported():
    assert codes(E.assess("Name:\tx\nTracerPid:\t0\n")) == ["seccomp-unknown"]


def test_findings_are_one_line():
    for f in E.assess(_status(tracer=9, mode=2, filters=1), {1}, "2"):
        assert "\n" not in str(f)


@pytest.mark.gdb
def test_live_target_with_seccomp_filter(tmp_path):
    from targets import run_gdb, wait_running
    from targets.fifo import FifoTarget
    script = '''
import json
from gdb_nsb.process.inferior import Inferior
from gdb_nsb.process import environment as E
inf = Inferior()
found = E.collect(inf)
print("NSB-RESULT: " + json.dumps([[f.code, f.severity, f.message] for f in found]))
'''
    with FifoTarget(tmp_path, "seccomp") as t:
        r = run_gdb(t.pid, python=script, timeout=60)
        assert len(r.results) == 1, r
        found = r.results[0]
        assert ["seccomp-filter", "refuse"] in [f[:2] for f in found], found
        assert "other-tracer" not in [f[0] for f in found]
        assert wait_running(t.pid)
        assert t.ask("ping") == "pong"
    with FifoTarget(_fresh(tmp_path)) as t:
        r = run_gdb(t.pid, python=script, timeout=60)
        assert len(r.results) == 1, r
        # No seccomp here, and nothing probed by an injected call (MDWE is not a finding).
        assert [f[0] for f in r.results[0]] == ([] if not os.path.exists(E.PTRACE_SCOPE_PATH) or
                                                E.read_ptrace_scope() == "0" else ["ptrace-scope"])
        assert wait_running(t.pid)


def _fresh(tmp_path):
    d = tmp_path / "plain"
    d.mkdir()
    return d
