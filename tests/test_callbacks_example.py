"""docs/examples/failed-logins, the README's worked example, run as written: a fix that needs new
per-object state (failed logins per connection, in a shadow variable), applied live and taken out."""

import os

import pytest

import targets as T

pytestmark = pytest.mark.timeout(300)
EXAMPLE = os.path.join(T.ROOT, "docs", "examples", "failed-logins")


def _source(name):
    return os.path.join(EXAMPLE, name)  # built where it is: its own #include "conn.h" is found beside it


def test_failed_logins_example(tmp_path):
    server = T.build([_source("server.c"), _source("auth.c")], ["-O2", "-g"], "failed-logins-server")
    patch = T.bind_patch(server, [_source("fix.c")], "failed-logins-fix.so", workdir=tmp_path)
    with T.Target([server], ready_line="ready") as tg:
        assert [tg.ask("login 1 guess") for _ in range(4)] == ["denied"] * 4  # the bug: guessing goes on
        r = T.nsb("patch", "-p", tg.pid, "-f", patch, "--timeout", "60", timeout=120)
        assert r.returncode == 0, r.stderr
        assert [tg.ask("login 1 guess") for _ in range(3)] == ["denied"] * 3
        assert tg.ask("login 1 secret") == "locked"  # three failures on connection 1: locked
        assert tg.ask("login 2 secret") == "ok"  # each connection has its own count
        r = T.nsb("revert", "-p", tg.pid, "-f", patch, "--timeout", "60", timeout=120)
        assert r.returncode == 0, r.stderr
        assert tg.ask("login 1 secret") == "ok"
        r = T.nsb("patch", "-p", tg.pid, "-f", patch, "--timeout", "60", timeout=120)
        assert r.returncode == 0, r.stderr
        assert tg.ask("login 1 guess") == "denied"  # the post-unpatch callback freed the old counts
        assert tg.ask("login 1 secret") == "ok"
