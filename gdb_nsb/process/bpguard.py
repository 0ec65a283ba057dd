"""Keep GDB breakpoint locations out of the bodies of redirected functions.

Once a function's entry jumps into a patch, its old body is dead code, and
its first bytes are the jump.  A breakpoint location there is harmful or
useless: GDB's ``int3`` inside the jump's bytes corrupts the jump while it is
inserted (REFERENCE.md section 6: ``break f`` on an ``-O0`` function lands a
few bytes past the entry), and a location at the entry stops every call in
the old function's source instead of the code that runs.  So, for as long as
the session knows a function is redirected (every nsb-* command refreshes
it from the process's registry), each user breakpoint location in its old
body is disabled, with a message, as the breakpoint is created, re-enabled or
re-set; the patch's own copy (whose symbols are registered) keeps its
location, so ``break f`` stops in the code that runs.  Locations disabled
here are enabled again once the function is no longer redirected.
"""

import gdb

from gdb_nsb.errors import RegistryCorrupt

ENDBR64 = b"\xf3\x0f\x1e\xfa"

_jumps = {}          # address of a redirecting jump -> (function name, jump length)
_disabled = set()    # (breakpoint number, location address) disabled by us
_installed = False


def track(registry):
    """Remember the jumps of ``registry`` (a Registry or None) and sweep every breakpoint."""
    global _jumps
    jumps = {}
    if registry is not None:
        for entry in registry.entries():
            guarded = entry_guard(registry, entry)
            if guarded is not None:
                jumps[entry] = guarded
    _jumps = jumps
    _install()
    for b in gdb.breakpoints() or ():
        _guard(b)


def entry_guard(registry, entry):
    """(function name, jump length) to guard at a redirected ``entry``, or None when nothing jumps there.

    A layer chain that does not order (RegistryCorrupt: forked or broken) still
    says the entry is redirected: every active layer's jump may be the one in
    memory, so the longest of them is guarded (more guarded than needed, never
    less)."""
    try:
        stack = registry.stack(entry)
    except RegistryCorrupt:
        stack = [(p.patch_build_id, p.function_at(entry)) for p in registry.active()]
        stack = sorted((s for s in stack if s[1] is not None), key=lambda s: len(s[1].jump))
    if not stack:
        return None
    top = stack[-1][1]
    return top.name, len(top.jump)


def _install():
    global _installed
    if not _installed:
        gdb.events.breakpoint_created.connect(_guard)
        gdb.events.breakpoint_modified.connect(_guard)
        _installed = True


def _function_entry(addr):
    """Entry address of the function whose code holds ``addr`` (GDB's blocks), or None."""
    try:
        block = gdb.block_for_pc(addr)
    except RuntimeError:
        return None
    while block is not None and block.function is None:
        block = block.superblock
    if block is None:
        return None
    try:
        return int(block.function.value().address)
    except (gdb.error, TypeError, ValueError):
        return None


def _starts_with_endbr(addr):
    try:
        return bytes(gdb.selected_inferior().read_memory(addr, 4)) == ENDBR64
    except gdb.error:
        return False


def dead_function(addr):
    """Name of the redirected function whose old body holds ``addr``, or None."""
    for at, (name, length) in _jumps.items():
        if at <= addr < at + length:
            return name
    entry = _function_entry(addr)
    if entry is None:
        return None
    if entry in _jumps:
        return _jumps[entry][0]
    if entry + 4 in _jumps and _starts_with_endbr(entry):
        return _jumps[entry + 4][0]
    return None


def _guard(bp):
    try:
        if not bp.is_valid() or bp.number <= 0 or bp.type not in (
                gdb.BP_BREAKPOINT, getattr(gdb, "BP_HARDWARE_BREAKPOINT", -1)):
            return
        locations = list(getattr(bp, "locations", None) or ())
    except RuntimeError:
        return
    for loc in locations:
        addr = loc.address
        if addr is None:
            continue
        key = (bp.number, addr)
        name = dead_function(addr) if _jumps else None
        if name is not None and loc.enabled and bp.enabled:
            loc.enabled = False
            _disabled.add(key)
            gdb.write("nsb: breakpoint %d: location %#x disabled: it lies in the old body of %s, which now "
                      "jumps to its live patch (the patch's copy keeps its location)\n" % (bp.number, addr, name))
        elif name is None and key in _disabled:
            _disabled.discard(key)
            if not loc.enabled:
                loc.enabled = True
                gdb.write("nsb: breakpoint %d: location %#x enabled again: %#x is live code again\n"
                          % (bp.number, addr, addr))
