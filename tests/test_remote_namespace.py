"""gdbserver in its own mount namespace (REFERENCE.md 2, "All access to the process goes through GDB").

1. gdbserver started by ``unshare -m`` with a tmpfs over the directory of the
   patch: the patch file does not exist where gdbserver (and the target's
   filesystem view) lives, yet the patch applies (its bytes are written
   through GDB), changes the value and reverts.
2. A target whose executable exists only inside its namespace (a tmpfs there),
   while the same path on the host holds ANOTHER build: the object files come
   through `remote get` (the host file has the wrong build-id and must not be
   trusted).  Then the executable is replaced inside the namespace, so the
   mapping reads "(deleted)" and the file at that path is the other build
   everywhere: the running build is fetched through /proc/PID/map_files.
"""

import os
import shutil
import subprocess

import pytest

import targets as T
from gdb_nsb.elf.livepatch import build_id_of
from targets import live as lt

pytestmark = [pytest.mark.timeout(600),
              pytest.mark.skipif(shutil.which("gdbserver") is None or shutil.which("unshare") is None
                                 or shutil.which("nsenter") is None, reason="gdbserver/unshare/nsenter missing")]

SECONDS = 240


def _unshare_works():
    r = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs none /mnt && umount /mnt"],
                       capture_output=True, timeout=20)
    return r.returncode == 0


def _in_namespace_of(pid, *argv):
    return subprocess.run(["nsenter", "-t", str(pid), "-m", "--"] + [str(a) for a in argv],
                          capture_output=True, text=True, timeout=30)



@pytest.fixture(autouse=True)
def _need_namespaces():
    if not _unshare_works():
        pytest.skip("mount namespaces not available (unshare -m + mount tmpfs failed)")


def test_gdbserver_in_own_mount_namespace_patch_file_absent(tmp_path):
    target = lt.build_target()
    patch_dir = tmp_path / "patches"
    patch_dir.mkdir()
    patch = lt.make_patch(target, patch_dir)
    # tmpfs over the patch directory, in gdbserver's namespace only.
    hide = ["unshare", "-m", "sh", "-c", 'mount -t tmpfs none "$0" && exec "$@"', str(patch_dir)]
    with lt.start_target(target) as tg:
        assert tg.ask("ignore 13") == "ignored 13"  # as servers do: remote run windows use it
        assert lt.value(tg) == 1002
        _, _, filebytes = T.memory_and_file(tg.pid, target, "compute", 16)
        with T.GdbServer(["--attach", "127.0.0.1:{port}", str(tg.pid)], prefix=lambda argv: hide + argv) as gs:
            seen = _in_namespace_of(gs.proc.pid, "ls", "-A", patch_dir)
            assert seen.returncode == 0 and seen.stdout == "", seen  # the patch is absent there
            assert os.path.isfile(patch)
            r = T.nsb("patch", "--remote", gs.address, "-f", patch, "--timeout", SECONDS, timeout=SECONDS + 60)
            assert r.returncode == 0, r.stdout + r.stderr
            assert "applied" in r.stdout
            assert gs.wait_exit(30) is not None
        tg.check_running()
        assert lt.value(tg) == 1502
        tg.ask("base 3000")
        assert lt.value(tg) == 3502

        with T.GdbServer(["--attach", "127.0.0.1:{port}", str(tg.pid)], prefix=lambda argv: hide + argv) as gs:
            r = T.nsb("revert", "--remote", gs.address, "-f", patch, "--timeout", SECONDS, timeout=SECONDS + 60)
            assert r.returncode == 0, r.stdout + r.stderr
            assert "reverted" in r.stdout
        tg.check_running()
        assert lt.value(tg) == 3002
        assert T.memory_and_file(tg.pid, target, "compute", 16)[1] == filebytes
        lt.assert_no_bad_values(tg)


def test_target_binary_only_in_namespace_and_deleted_mapping(tmp_path):
    v1 = lt.build_target(variant="\nint build_variant = 1;\n")
    v2 = lt.build_target(variant="\nint build_variant = 2;\n")
    p1 = lt.make_patch(v1, tmp_path, name="p1.so")
    p2 = lt.make_patch(v2, tmp_path, name="p2.so")
    ns_dir = tmp_path / "ns"
    ns_dir.mkdir()
    prog = str(ns_dir / "prog")
    # On the host, the path names build 2; inside the target's namespace (tmpfs), build 1 runs.
    shutil.copy(v2, prog)
    script = 'mount -t tmpfs none "$0" && cp "$1" "$0/prog" && exec "$0/prog"'
    with T.Target(["unshare", "-m", "sh", "-c", script, str(ns_dir), v1], ready_line="ready") as tg:
        assert tg.ask("ignore 13") == "ignored 13"  # as servers do: remote run windows use it
        assert lt.value(tg) == 1002
        assert _in_namespace_of(tg.pid, "cmp", "-s", prog, v1).returncode == 0
        assert build_id_of(prog) == build_id_of(v2) != build_id_of(v1)
        _, _, filebytes = T.memory_and_file(tg.pid, v1, "compute", 16, mapped_as=prog)
        in_ns = lambda argv: ["nsenter", "-t", str(tg.pid), "-m", "--"] + argv

        # Objects come through `remote get`: the host file at that path is another build.
        with T.GdbServer(["--attach", "127.0.0.1:{port}", str(tg.pid)], prefix=in_ns) as gs:
            r = T.nsb("patch", "--remote", gs.address, "-f", p1, "--timeout", SECONDS, timeout=SECONDS + 60)
            assert r.returncode == 0, r.stdout + r.stderr
        tg.check_running()
        assert lt.value(tg) == 1502
        with T.GdbServer(["--attach", "127.0.0.1:{port}", str(tg.pid)], prefix=in_ns) as gs:
            r = T.nsb("revert", "--remote", gs.address, "-f", p1, "--timeout", SECONDS, timeout=SECONDS + 60)
            assert r.returncode == 0, r.stdout + r.stderr
        tg.check_running()
        assert lt.value(tg) == 1002
        assert T.memory_and_file(tg.pid, v1, "compute", 16, mapped_as=prog)[1] == filebytes

        # Replace the executable inside the namespace: the mapping is "(deleted)" and the path is
        # build 2 on both sides; the running build comes from /proc/PID/map_files through gdbserver.
        r = _in_namespace_of(tg.pid, "sh", "-c", 'cp "$0" "$1.new" && mv "$1.new" "$1"', v2, prog)
        assert r.returncode == 0, r
        assert any(prog + " (deleted)" in l for l in T.maps(tg.pid))
        with T.GdbServer(["--attach", "127.0.0.1:{port}", str(tg.pid)], prefix=in_ns) as gs:
            r = T.nsb("patch", "--remote", gs.address, "-f", p2, "--timeout", SECONDS, timeout=SECONDS + 60)
            assert r.returncode == 4, r.stdout + r.stderr
            assert "build-id mismatch" in r.stderr, r.stderr
        with T.GdbServer(["--attach", "127.0.0.1:{port}", str(tg.pid)], prefix=in_ns) as gs:
            r = T.nsb("patch", "--remote", gs.address, "-f", p1, "--timeout", SECONDS, timeout=SECONDS + 60)
            assert r.returncode == 0, r.stdout + r.stderr
        tg.check_running()
        assert lt.value(tg) == 1502
        with T.GdbServer(["--attach", "127.0.0.1:{port}", str(tg.pid)], prefix=in_ns) as gs:
            r = T.nsb("list", "--remote", gs.address, timeout=SECONDS + 60)
            assert r.returncode == 0 and "active" in r.stdout, r.stdout + r.stderr
        with T.GdbServer(["--attach", "127.0.0.1:{port}", str(tg.pid)], prefix=in_ns) as gs:
            r = T.nsb("revert", "--remote", gs.address, "-f", p1, "--timeout", SECONDS, timeout=SECONDS + 60)
            assert r.returncode == 0, r.stdout + r.stderr
        tg.check_running()
        assert lt.value(tg) == 1002
        assert T.memory_and_file(tg.pid, v1, "compute", 16, mapped_as=prog)[1] == filebytes
        lt.assert_no_bad_values(tg)
