"""The patch's callbacks (``vzp.h`` VZP_PRE_PATCH ...) and its use of shadow variables, for the generator.

A callback record names a function the patch defines; the section gets its
link-time address in the patch.  Refused, naming the macro's line: a
callback the patch does not define, two callbacks of one kind, and a
callback that is also a replacement (a target function of the same name:
redirecting it would run the callback as program code).
"""

from gdb_nsb.elf.livepatch import CALLBACK_KINDS, Callback
from gdb_nsb.errors import GenerateError
from gdb_nsb.shadow import SHADOW_SYMBOL


def bind_callbacks(patch, replaced_patch_values, explain):
    """[Callback] of ``patch`` (generator.inputs.Patch), in CALLBACK_KINDS order.

    ``replaced_patch_values``: patch addresses of the functions that replace target functions."""
    by_kind = {}
    for r in patch.callbacks():
        where = "%s:%d" % (r.source_file, r.source_line)
        if r.kind in by_kind:
            raise GenerateError("two %s callbacks: %s and %s (%s); a patch has at most one of each kind"
                                % (r.kind, by_kind[r.kind][0].name, r.patch_symbol, where))
        syms = [s for s in patch.image.symtab if s.name == r.patch_symbol and s.defined and s.type == "STT_FUNC"]
        syms.sort(key=lambda s: s.is_local)
        if not syms:
            raise GenerateError("%s callback %s (%s) is not a function the patch defines"
                                % (r.kind, r.patch_symbol, where))
        value = syms[0].value
        if value in replaced_patch_values:
            raise GenerateError("%s callback %s (%s) has the name of a target function, which the patch would "
                                "replace with it: give the callback a name of its own"
                                % (r.kind, r.patch_symbol, where))
        by_kind[r.kind] = (Callback(r.kind, r.patch_symbol, value), where)
        explain.append("callback %s: %s at patch %#x (%s)" % (r.kind, r.patch_symbol, value, where))
    return [by_kind[k][0] for k in CALLBACK_KINDS if k in by_kind]


def uses_shadow(patch_image):
    """True when the patch calls the shadow-variable API (it then names the region's symbol)."""
    return any(s.name == SHADOW_SYMBOL and not s.defined for s in patch_image.dynsyms)
