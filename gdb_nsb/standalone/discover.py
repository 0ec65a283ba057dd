"""Find the local processes `--all-of` means, without attaching to any.

patch and check: every process that maps an object with the patch's target
build-id.  revert: every process that carries the patch (its registry holds
an active record of it; any record with --unmap), read host-wide
(gdb_nsb.standalone.hostwide)."""

import os

from gdb_nsb import errors
from gdb_nsb.elf.image import ElfImage
from gdb_nsb.elf.livepatch import LivePatch


def mapped_objects(pid):
    """(path, map_files entry) of every file-backed executable mapping of ``pid``."""
    out = {}
    try:
        with open("/proc/%d/maps" % pid) as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    for line in lines:
        parts = line.split(None, 5)
        if len(parts) < 6 or "x" not in parts[1] or not parts[5].startswith("/"):
            continue
        # map_files reaches the mapped object even when the path now names another
        # file (package upgrade) or was deleted.
        out.setdefault(parts[5], "/proc/%d/map_files/%s" % (pid, parts[0]))
    return list(out.items())


def processes_mapping_build_id(build_id):
    """Pids (ascending) of the processes that map an object whose build-id is ``build_id``."""
    found = []
    cache = {}
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        pid = int(name)
        for path, mapfile in mapped_objects(pid):
            try:
                st = os.stat(mapfile)
            except OSError:
                # map_files may be closed to us; the path still names the object unless it was replaced.
                mapfile = path
                try:
                    st = os.stat(mapfile)
                except OSError:
                    continue
            key = (st.st_dev, st.st_ino)
            if key not in cache:
                try:
                    cache[key] = ElfImage(mapfile).build_id
                except (errors.NsbError, OSError):
                    cache[key] = None
            if cache[key] == build_id:
                found.append(pid)
                break
    return sorted(found)


def processes_mapping_patch_target(patch_path):
    """Pids of the processes that map the target of the live patch in ``patch_path``."""
    return processes_mapping_build_id(LivePatch.read(patch_path).old_bid)


def all_of_processes(command, patch_info, args):
    """(pids, the message when there are none) of ``--all-of`` for ``command``."""
    if command == "revert":
        from gdb_nsb.standalone import hostwide
        bid = patch_info["build_id"]
        pids = hostwide.processes_carrying(bid, patch_info.get("target_build_id"),
                                           include_inactive=getattr(args, "unmap", False))
        return pids, "no process carries patch %s%s" % (bid, "" if getattr(args, "unmap", False) else " (applied)")
    bid = patch_info["target_build_id"]
    return processes_mapping_build_id(bid), "no process maps the target of %s (build-id %s)" % (args.patch, bid)
