"""A patched process forks (REFERENCE.md 2.6: children inherit patches and registry, private mappings).

The child inherits the redirected code, the patch mapping and the registry;
``nsb list -p CHILD`` shows the patch, a revert in the child restores the
child's code and leaves the parent patched (and listed as such).
"""

import json
import os
import threading

import pytest

import targets as T
from targets import live as lt

pytestmark = pytest.mark.timeout(600)
SECONDS = 240


class Child:
    """The forked child's line protocol over two FIFOs (opened with a bound wait)."""

    def __init__(self, directory, timeout=20):
        self.files = {}

        def open_both():
            self.files["in"] = open(os.path.join(directory, "in"), "w", buffering=1)
            self.files["out"] = open(os.path.join(directory, "out"), "r")

        t = threading.Thread(target=open_both, daemon=True)
        t.start()
        t.join(timeout)
        assert "out" in self.files, "the child did not open its FIFOs"

    def readline(self, timeout=10):
        import select
        r, _, _ = select.select([self.files["out"]], [], [], timeout)
        assert r, "the child printed no line within %ss" % timeout
        return self.files["out"].readline().rstrip("\n")

    def ask(self, line):
        self.files["in"].write(line + "\n")
        return self.readline()

    def close(self):
        for f in self.files.values():
            f.close()


def _patches(pid):
    r = T.nsb("list", "-p", pid, "--json", timeout=SECONDS + 60)
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout)["processes"][0]["patches"]


def test_forked_child_inherits_patch_and_reverts_alone(tmp_path):
    target = lt.build_target()
    patch = lt.make_patch(target, tmp_path)
    fifo_dir = str(tmp_path / "child")
    os.mkdir(fifo_dir)
    os.mkfifo(os.path.join(fifo_dir, "in"))
    os.mkfifo(os.path.join(fifo_dir, "out"))
    with lt.start_target(target) as tg:
        _, _, filebytes = T.memory_and_file(tg.pid, target, "compute", 16)
        r = T.nsb("patch", "-p", tg.pid, "-f", patch, "--timeout", SECONDS, timeout=SECONDS + 60)
        assert r.returncode == 0, r.stdout + r.stderr
        assert lt.value(tg) == 1502
        registry_maps = [l for l in T.maps(tg.pid) if "nsb-registry" in l]
        assert registry_maps and all(l.split()[1].endswith("p") for l in registry_maps), registry_maps

        tg.send("fork " + fifo_dir)
        child = Child(fifo_dir)
        try:
            line = tg.readline(20)
            assert line.startswith("forked "), line
            cpid = int(line.split()[1])
            assert child.readline(20) == "child %d" % cpid
            assert child.ask("v") == "v 1502"  # inherited code and patch mapping
            assert T.memory_and_file(cpid, target, "compute", 16)[1] == \
                T.memory_and_file(tg.pid, target, "compute", 16)[1]

            patches = _patches(cpid)
            assert [(p["state"], p["functions"][0]["name"]) for p in patches] == [("active", "compute")], patches
            r = T.nsb("check", "-p", cpid, "-f", patch, timeout=SECONDS + 60)
            assert r.returncode == 0 and "is applied" in r.stdout, r.stdout + r.stderr

            r = T.nsb("revert", "-p", cpid, "-f", patch, "--timeout", SECONDS, timeout=SECONDS + 60)
            assert r.returncode == 0, r.stdout + r.stderr
            assert child.ask("v") == "v 1002"
            assert T.memory_and_file(cpid, target, "compute", 16)[1] == filebytes
            assert [p["state"] for p in _patches(cpid)] == ["inactive"]

            # The parent keeps its patch, code and registry (the child's were private copies).
            assert lt.value(tg) == 1502
            assert T.memory_and_file(tg.pid, target, "compute", 16)[1] != filebytes
            assert [p["state"] for p in _patches(tg.pid)] == ["active"]

            # And the child can take the patch again, the parent revert its own.
            r = T.nsb("patch", "-p", cpid, "-f", patch, "--timeout", SECONDS, timeout=SECONDS + 60)
            assert r.returncode == 0, r.stdout + r.stderr
            assert child.ask("v") == "v 1502"
            r = T.nsb("revert", "-p", tg.pid, "-f", patch, "--timeout", SECONDS, timeout=SECONDS + 60)
            assert r.returncode == 0, r.stdout + r.stderr
            assert lt.value(tg) == 1002
            assert child.ask("v") == "v 1502"
            assert T.wait_running(cpid, 10) and T.wait_running(tg.pid, 10)
            assert child.ask("bad").startswith("bad 0 ")
            lt.assert_no_bad_values(tg)
        finally:
            child.close()
            try:
                os.kill(cpid, 9)
            except (OSError, NameError):
                pass
