"""Debian's memcached, live-patched as its maintainer would (issue 13 item 6; slow tier).

The package is built as Debian builds it (tests/debpkg.py: ``dpkg-buildpackage -b``, nocheck):
a stripped PIE, its DWARF in the ``memcached-dbgsym`` package, compressed and dwz-processed
(partial units), every path rewritten by ``-ffile-prefix-map`` to ``.``.  The server runs on a
local port and is checked only through its own text protocol, before, during (a client keeps
storing and reading while GDB works), after the patch and after the revert.

* the program's own headers: ``get_stats`` (memcached.c) rewritten against ``memcached.h``
  (APPEND_STAT, STATS_LOCK, the stats globals): plain ``stats`` reports ``nsb_patched 1``;
* a function the compiler inlined: ``process_stats_detail`` exists only inside ``process_stat``;
  manual mode refuses it alone, naming the caller, and takes it with the caller;
  ``set_noreply_maybe`` is inlined into 5 functions of proto_text.c: auto mode redirects them;
* auto mode on real units: memcached.c (6,000 lines) with ``get_stats`` edited; proto_text.c
  with the ``version`` reply edited (the function lives only inlined in ``process_command_ascii``).

Debian builds proto_text.c at plain -O2: the callers of what the patch replaces may rely on
-fipa-pure-const/-fipa-modref/-fipa-reference (docs/IPA.md), so generate refuses first, naming them;
the tests follow its advice (``--allow-ipa-ra``) as a maintainer would.
"""

import os
import re
import socket
import subprocess
import time

import pytest

import realprog
from targets import Target

pytestmark = [pytest.mark.slow, pytest.mark.gdb, pytest.mark.timeout(2400)]

IPA_ADVICE = "--allow-ipa-ra forces it unsafely"


def _refused_then_overridden(*args):
    """Debian's plain -O2 proto_text.c: generate refuses (exit 12) naming the callers the patch does not
    replace and the caller-side passes (docs/IPA.md); the advice followed (``--allow-ipa-ra``) generates."""
    r = realprog.nsb_cmd(*args)
    assert r.returncode == 12, (r.stdout, r.stderr)
    assert "has callers in its compile unit that the patch does not replace" in r.stderr, r.stderr
    assert "-fipa-modref" in r.stderr and IPA_ADVICE in r.stderr, r.stderr
    r = realprog.nsb_cmd(*args, "--allow-ipa-ra")
    assert r.returncode == 0, r.stderr
    return r


@pytest.fixture(scope="module")
def mc():
    return realprog.package("memcached")


def _binary(mc):
    return realprog.target(mc)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Client:
    """One connection speaking memcached's text protocol, every read bounded in time."""

    def __init__(self, port, timeout=10):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""

    def close(self):
        self.sock.close()

    def send(self, text):
        self.sock.sendall(text.encode())

    def line(self):
        while b"\r\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("memcached closed the connection")
            self.buf += data
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line.decode()

    def ask(self, command):
        """The one-line reply to ``command``."""
        self.send(command + "\r\n")
        return self.line()

    def stats(self, sub=""):
        self.send(("stats %s" % sub).strip() + "\r\n")
        out = {}
        while True:
            line = self.line()
            if line == "END":
                return out
            m = re.match(r"STAT (\S+) (.*)$", line)
            assert m, "unexpected stats line %r" % line
            out[m.group(1)] = m.group(2)


class Server(Target):
    """The package's memcached on a free local port (killed with its process group at the end)."""

    def __init__(self, mc):
        self.port = _free_port()
        argv = [_binary(mc), "-l", "127.0.0.1", "-p", str(self.port), "-U", "0", "-t", "2", "-m", "16"]
        if os.geteuid() == 0:
            argv += ["-u", "root"]
        super().__init__(argv)

    def __enter__(self):
        super().__enter__()
        deadline = time.monotonic() + 20
        while True:
            try:
                Client(self.port, timeout=2).close()
                return self
            except OSError:
                if not self.alive() or time.monotonic() > deadline:
                    self.__exit__(None, None, None)
                    raise RuntimeError("memcached did not listen on %d: %s" % (self.port, self.proc.stderr.read()
                                                                               if not self.alive() else "timeout"))
                time.sleep(0.1)

    def client(self):
        return Client(self.port)


class Traffic(realprog.Traffic):
    """A client storing and reading keys all the time, on its own connection; every reply checked."""

    def __init__(self, server):
        super().__init__()
        self.server, self.conn = server, None

    def connect(self):
        self.conn = self.server.client()

    def close(self):
        if self.conn is not None:
            self.conn.close()

    def one_round(self):
        c = self.conn
        key = "k%d" % (self.rounds % 50)
        value = "v%d" % self.rounds
        c.send("set %s 0 0 %d\r\n%s\r\n" % (key, len(value), value))
        got = [c.line()]
        c.send("get %s\r\n" % key)
        got += [c.line(), c.line(), c.line()]
        want = ["STORED", "VALUE %s 0 %d" % (key, len(value)), value, "END"]
        return None if got == want else (got, want)


def _apply_and_revert(server, so, before, during):
    """Patch with traffic running; ``before()`` holds before and after the revert, ``during()`` in between."""
    probe = server.client()
    try:
        realprog.apply_and_revert(server.pid, so, Traffic(server), lambda: before(probe), lambda: during(probe))
    finally:
        probe.close()
    assert server.alive()


# ------------------------------------------------------------------------------------------ the build

def test_debian_build_is_what_debian_ships(mc):
    """Stripped binary; DWARF found by build-id in the dbgsym tree, compressed, dwz partial units,
    paths rewritten by -ffile-prefix-map (compile directory ".")."""
    from gdb_nsb.elf.debuginfo import find_debug_file, open_dwarf
    from gdb_nsb.elf.image import ElfImage
    exe = ElfImage(_binary(mc))
    assert not exe.has_debug_info
    dbg = find_debug_file(exe, search_dirs=[mc.debug_dir])
    assert dbg and "/.build-id/" in dbg, dbg
    sections = subprocess.run(["readelf", "-SW", dbg], capture_output=True, text=True, check=True).stdout
    assert re.search(r"\.debug_info\s.*\bC\b", sections), "debug sections not compressed:\n" + sections
    info = subprocess.run(["readelf", "--debug-dump=info", dbg], capture_output=True, text=True).stdout
    assert "DW_TAG_partial_unit" in info, "no dwz partial unit"
    units = {u.name: u for u in open_dwarf(exe, search_dirs=[mc.debug_dir]).compile_units()}
    assert "proto_text.c" in units and units["proto_text.c"].comp_dir == ".", sorted(units)[:10]
    assert "-O2" in units["proto_text.c"].producer


# ------------------------------------------------------------------------ (a) the program's headers

def test_header_patch_live(mc, tmp_path):
    """get_stats rewritten against memcached.h: ``stats`` shows nsb_patched 1 while applied, only then."""
    so = realprog.build_patch(mc, "get_stats", realprog.fixture("memcached", "get_stats.c"),
                              mc.unit_flags("memcached.c"), tmp_path)
    r = realprog.generate(mc, _binary(mc), so, "--explain")
    assert r.returncode == 0, r.stderr
    assert re.search(r"function get_stats: target 0x[0-9a-f]+ \(memcached\.c", r.stdout), r.stdout
    # nz_strcmp, defined in the patch's own .c in VZP_FILE's unit, replaces the target's static, which exists
    # only inlined into get_stats: accepted because get_stats, its one holder, is replaced too.
    assert re.search(r"function nz_strcmp \(.*get_stats\.c:\d+\): the target has it only inlined in memcached\.c",
                     r.stdout), r.stdout

    def before(c):
        s = c.stats()
        assert "nsb_patched" not in s and int(s["pid"]) == server.pid

    def during(c):
        s = c.stats()
        assert s.get("nsb_patched") == "1" and "curr_items" in s, s
        assert "STAT items:" in "\n".join("STAT %s" % k for k in c.stats("items"))  # other branches unchanged

    with Server(mc) as server:
        _apply_and_revert(server, so, before, during)


# ------------------------------------------------------------------- (b) a function inlined: manual

def test_inlined_only_refused_naming_caller(mc, tmp_path):
    """process_stats_detail alone: refused (exit 12), naming process_stat and where it is."""
    so = realprog.build_patch(mc, "stats_detail", realprog.fixture("memcached", "stats_detail.c"),
                              mc.unit_flags("proto_text.c"), tmp_path)
    r = realprog.generate(mc, _binary(mc), so)
    assert r.returncode == 12, (r.stdout, r.stderr)
    assert "process_stat" in r.stderr and "proto_text.c:732" in r.stderr, r.stderr


def test_inlined_with_caller_live(mc, tmp_path):
    """The advice followed: process_stat replaced too; ``stats detail`` answers the patched usage."""
    so = realprog.build_patch(mc, "stats_detail_with_caller",
                              realprog.fixture("memcached", "stats_detail_with_caller.c"),
                              mc.unit_flags("proto_text.c"), tmp_path)
    r = _refused_then_overridden("generate", _binary(mc), so, "--explain", "--debug-dir", mc.debug_dir)
    assert re.search(r"function process_stat: target 0x[0-9a-f]+ \(proto_text\.c", r.stdout), r.stdout

    def before(c):
        assert c.ask("stats detail") == "CLIENT_ERROR usage: stats detail on|off|dump"

    def during(c):
        assert c.ask("stats detail") == "CLIENT_ERROR usage: stats detail on|off|dump (patched)"
        assert c.ask("stats detail on") == "OK" and c.ask("stats detail off") == "OK"

    with Server(mc) as server:
        _apply_and_revert(server, so, before, during)


# --------------------------------------------------------------------- (b) and (c): auto mode

def _auto(mc, tmp_path, unit, old, new, name):
    return realprog.auto_edit(mc, tmp_path, unit, old, new, name)


def test_auto_real_unit_live(mc, tmp_path):
    """memcached.c as a whole unit, get_stats edited: only get_stats is redirected; live as above."""
    so, r = _auto(mc, tmp_path, "memcached.c",
                  '            APPEND_STAT("slab_global_page_pool", "%u", global_page_pool_size(NULL));\n',
                  '            APPEND_STAT("slab_global_page_pool", "%u", global_page_pool_size(NULL));\n'
                  '            APPEND_STAT("nsb_patched", "%u", 1);\n', "auto-memcached")
    assert r.returncode == 0, r.stderr
    redirected = re.findall(r"^function (\S+): target", r.stdout, re.M)
    assert redirected == ["get_stats"], r.stdout
    assert re.search(r"^unchanged server_stats ", r.stdout, re.M), r.stdout

    def before(c):
        assert "nsb_patched" not in c.stats()

    def during(c):
        assert c.stats().get("nsb_patched") == "1"

    with Server(mc) as server:
        _apply_and_revert(server, so, before, during)


NOREPLY_CALLERS = set(realprog.INLINED["memcached"]["callers"])  # holding an inlined copy of set_noreply_maybe


def test_auto_inlined_into_callers_live(mc, tmp_path):
    """set_noreply_maybe edited to ignore "noreply": every function holding an inlined copy is redirected
    (--explain says why), and ``set``/``incr``/``delete`` answer although asked not to."""
    so, args = realprog.inlined_args(mc, tmp_path)
    r = _refused_then_overridden(*args, "--explain")
    redirected = set(re.findall(r"^function (\S+): target", r.stdout, re.M))
    assert NOREPLY_CALLERS <= redirected, r.stdout
    for name in NOREPLY_CALLERS - {"process_command_ascii"}:
        assert re.search(r"%s.*inlined.*set_noreply_maybe|set_noreply_maybe.*inlined.*%s" % (name, name),
                         r.stdout), "--explain does not say why %s is redirected:\n%s" % (name, r.stdout)

    def before(c):
        c.send("set nr 0 0 1 noreply\r\n7\r\n")
        c.send("incr nr 1 noreply\r\n")
        assert c.ask("get nr") == "VALUE nr 0 1" and c.line() == "8" and c.line() == "END"

    def during(c):
        assert c.ask("set nr 0 0 1 noreply\r\n7") == "STORED"
        assert c.ask("incr nr 1 noreply") == "8"
        # delete's own check wants set_noreply_maybe true for its 4-token form: the edited copy inlined
        # there says false, so the command is refused, and the refusal is heard (noreply ignored).
        assert c.ask("delete nr noreply") == "CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]"

    with Server(mc) as server:
        _apply_and_revert(server, so, before, during)


def test_auto_change_only_inlined_live(mc, tmp_path):
    """The ``version`` reply edited: process_version_command exists only inlined, so the change is
    redirected through process_command_ascii (generate used to say "0 functions redirected", exit 0)."""
    so, args = realprog.auto_args(mc, tmp_path, "proto_text.c", 'out_string(c, "VERSION " VERSION);',
                                  'out_string(c, "VERSION " VERSION " nsb");', "auto-version")
    r = _refused_then_overridden(*args, "--explain")
    assert "process_command_ascii" in set(re.findall(r"^function (\S+): target", r.stdout, re.M)), r.stdout

    def before(c):
        assert c.ask("version") == "VERSION " + mc.version.split("-")[0]

    def during(c):
        assert c.ask("version") == "VERSION %s nsb" % mc.version.split("-")[0]

    with Server(mc) as server:
        _apply_and_revert(server, so, before, during)


def test_auto_redirect_reaching_main_is_refused(mc, tmp_path):
    """sanitycheck exists only inlined into main: redirecting main would never take effect in the running
    server (main does not return), so generate refuses, saying so and naming main."""
    _so, r = _auto(mc, tmp_path, "memcached.c", '            fprintf(stderr, "You are using libevent %s.\\nPlease',
                   '            fprintf(stderr, "nsb: you are using libevent %s.\\nPlease', "auto-main")
    assert r.returncode == 12, (r.stdout, r.stderr)
    assert "main" in r.stderr and "sanitycheck" in r.stderr, r.stderr
    assert re.search(r"main is entered once and left only at exit .*a jump at its entry never takes effect",
                     r.stderr), r.stderr
