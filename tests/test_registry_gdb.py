"""The registry in a real process: created by one GDB session, found by the next, corruption detected."""


import pytest

import targets as T
from gdb_nsb import registry_slots as slots
from targets import run_gdb, wait_running
from targets.fifo import FifoTarget

pytestmark = pytest.mark.gdb

PRELUDE = T.INFERIOR_PRELUDE + '''
from gdb_nsb.process.undo import UndoLog
from gdb_nsb.process.registry_store import RegistryStore
from gdb_nsb.registry import Registry, PatchRecord, MappedRange
from gdb_nsb.errors import RegistryCorrupt
store = RegistryStore(inf, inj)
'''

CREATE = PRELUDE + '''
assert store.load() is None
reg = Registry()
p = PatchRecord("ab" * 20, "cd" * 20, "/usr/bin/target", 0x555555554000, 0x7f0000000000,
                [MappedRange(0x7f0000000000, 0x2000, 5)], "/tmp/p.so")
reg.patches.append(p)
reg.push_layer(p.patch_build_id, "f", 0x555555555130, b"\\xe9\\x01\\x02\\x03\\x04", b"\\x55\\x48\\x89\\xe5\\x90")
with inj.session():
    undo = UndoLog(inf, inj)
    addr = store.save(reg, undo)
    undo.commit()
result(addr=addr, size=store.location[1])
'''

FIND = PRELUDE + '''
try:
    reg = store.load()
    p = reg.patches[0]
    f = p.functions[0]
    result(addr=store.location[0], generation=reg.generation, bid=p.patch_build_id, target=p.target_build_id,
           bias=p.target_load_bias, ranges=[[r.start, r.length, r.prot] for r in p.ranges], name=f.name,
           entry=f.entry, jump=f.jump.hex(), original=f.original.hex(), state=p.state, stale=store.stale)
except RegistryCorrupt as e:
    result(corrupt=str(e), read_only=store.read_only)
'''

GROW = PRELUDE + '''
reg = store.load()
old = store.location
for i in range(60):
    reg.patches.append(PatchRecord("%040x" % i, "cd" * 20, "/usr/bin/target-with-a-long-name", i, i))
with inj.session():
    undo = UndoLog(inf, inj)
    store.save(reg, undo)
    both = len(store.registry_mappings())
    undo.commit()
result(old=old, new=store.location, during=both, after=len(store.registry_mappings()))
'''


def test_registry_created_then_found_by_fresh_session(tmp_path):
    with FifoTarget(tmp_path) as t:
        r = run_gdb(t.pid, python=CREATE, timeout=60)
        assert len(r.results) == 1, r
        created = r.results[0]
        assert wait_running(t.pid)
        names = [line for line in T.maps(t.pid) if "nsb-registry" in line]
        assert len(names) == 1 and names[0].endswith("/memfd:nsb-registry (deleted)"), names
        assert names[0].split()[1] == "r--p"
        assert int(names[0].split("-")[0], 16) == created["addr"]

        r = run_gdb(t.pid, python=FIND, timeout=60)
        assert len(r.results) == 1, r
        found = r.results[0]
        assert found["addr"] == created["addr"] and found["generation"] == 1
        assert found["bid"] == "ab" * 20 and found["target"] == "cd" * 20
        assert found["bias"] == 0x555555554000 and found["ranges"] == [[0x7f0000000000, 0x2000, 5]]
        assert (found["name"], found["entry"], found["jump"], found["original"]) == \
            ("f", 0x555555555130, "e901020304", "554889e590")
        assert found["state"] == "active" and found["stale"] == []
        assert wait_running(t.pid)

        # Growing moves it to a new, larger mapping; the old one goes at commit.
        r = run_gdb(t.pid, python=GROW, timeout=60)
        assert len(r.results) == 1, r
        g = r.results[0]
        assert g["during"] == 2 and g["after"] == 1 and g["new"][1] > g["old"][1]
        r = run_gdb(t.pid, python=FIND, timeout=60)
        assert r.results[0]["generation"] == 2 and r.results[0]["addr"] == g["new"][0]
        assert wait_running(t.pid)
        assert t.ask("ping") == "pong"


def test_corrupted_registry_means_read_only(tmp_path):
    with FifoTarget(tmp_path) as t:
        r = run_gdb(t.pid, python=CREATE, timeout=60)
        addr, size = r.results[0]["addr"], r.results[0]["size"]
        assert wait_running(t.pid)
        # Flip one payload byte of the committed slot (the first commit fills slot 1; slot 0 was never
        # written): no valid slot is left.
        at = addr + slots.slot_offset(1, slots.slot_size_for(size)) + 40
        T.write_mem(t.pid, at, bytes([T.read_mem(t.pid, at, 1)[0] ^ 0x20]))
        r = run_gdb(t.pid, python=FIND + '''
try:
    store.save(Registry(), UndoLog(inf, inj))
    result(write="allowed")
except RegistryCorrupt as e:
    result(write=str(e))
''', timeout=60)
        assert len(r.results) == 2, r
        assert r.results[0]["read_only"] is True
        msg = r.results[0]["corrupt"]
        assert "fails its CRC check" in msg and "read-only mode" in msg and "\n" not in msg
        assert r.results[1]["write"].startswith("registry is corrupt, refusing to write it")
        assert wait_running(t.pid)
        assert t.ask("ping") == "pong"


MIGRATE = PRELUDE + '''
from gdb_nsb import registry_slots as slots
# A registry as format 1 wrote it: one header + payload at the start of the memfd.
old = Registry(generation=3)
old.patches.append(PatchRecord("ab" * 20, "cd" * 20, "/usr/bin/target", 1, 2, [MappedRange(0x7f0000000000, 0x1000, 5)]))
with inj.session():
    undo = UndoLog(inf, inj)
    addr = store._create(4096, undo)
    undo.write(addr, old.encode())
    undo.commit()
store = RegistryStore(inf, inj)
seen = store.load()
version = store.found.version
seen.patches[0].patch_path = "/tmp/migrated.so"
with inj.session():
    undo = UndoLog(inf, inj)
    store.save(seen, undo)
    undo.commit()
again = RegistryStore(inf, inj)
back = again.load()
result(v1_addr=addr, read_v1=version == 1 and seen.patches[0].patch_build_id == "ab" * 20,
       new_addr=again.location[0], version=again.found.version, generation=back.generation,
       path=back.patches[0].patch_path, mappings=len(again.registry_mappings()), seq=again.read_seq())
'''


def test_format_1_registry_is_read_and_migrated(tmp_path):
    """A registry written by the old in-place format is read, and the next write moves it to a two-slot
    mapping of the next generation (the old one unmapped at commit)."""
    with FifoTarget(tmp_path) as t:
        r = run_gdb(t.pid, python=MIGRATE, timeout=90)
        assert len(r.results) == 1, r
        m = r.results[0]
        assert m["read_v1"] is True
        assert m["version"] == slots.FORMAT_VERSION and m["generation"] == 4 and m["new_addr"] != m["v1_addr"]
        assert m["path"] == "/tmp/migrated.so" and m["mappings"] == 1 and m["seq"] == 1
        assert wait_running(t.pid)
        assert t.ask("ping") == "pong"
