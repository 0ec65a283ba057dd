"""Symbol resolution for a patch, in the order of REFERENCE 2.3.

For each symbol a relocation of the patch names:
  1. the generator's pre-resolved non-interposable target symbols
     (``manual_symbols``: index -> bias(target) + addr);
  2. for an executable target, its pre-resolved globals (``global_symbols``);
  3. a symbol the patch defines: the target's function it replaces (or the
     target's exported definition of that name) when there is one, so that
     ``&f`` is the same in patch and target; only a function that exists
     solely in the patch binds to the patch's own copy;
  4. the process's global lookup scope as the dynamic linker builds it: the
     main executable, preloaded objects, the breadth-first DT_NEEDED closure,
     then RTLD_GLOBAL dlopened objects; a target outside that scope (dlopened
     locally) adds its own dependency closure.  Never the vDSO; never other
     patches.  Symbol versions of the patch (.gnu.version_r) are honoured;
     an unversioned reference takes the default (``@@``) version.  The first
     definition wins;
  5. for an executable target, a global of its .symtab (what the generator
     leaves to run time: IFUNCs such as strlen in a static binary).
An unresolved weak reference is 0; an unresolved strong one is an error.
An IFUNC definition binds to its implementation, read from a slot of the
process that already holds it (a GLOB_DAT/JUMP_SLOT GOT entry for that
symbol, or an IRELATIVE slot whose addend is the resolver).
"""

from __future__ import annotations

import os
import struct
from collections import deque
from dataclasses import dataclass

from gdb_nsb.binder.errors import BadRelocation, IfuncNeedsResolver, UnresolvedSymbol
from gdb_nsb.binder.process_view import (LOADED_DLOPEN_GLOBAL, LOADED_PRELOAD, MappedObject, ProcessView)
from gdb_nsb.errors import NsbError
from gdb_nsb.shadow import SHADOW_OBJFILE, SHADOW_SYMBOL

SHN_UNDEF, SHN_ABS = 0, 0xFFF1
R_X86_64_64, R_X86_64_GLOB_DAT, R_X86_64_JUMP_SLOT, R_X86_64_IRELATIVE = 1, 6, 7, 37
PT_GNU_RELRO = 0x6474E552
_EXPORT_BINDS = ("STB_GLOBAL", "STB_WEAK", "STB_GNU_UNIQUE")
_EXPORT_VIS = ("STV_DEFAULT", "STV_PROTECTED")

# How a symbol was bound, for --dry-run and tests.
BY_MANUAL = "manual symbol"
BY_GLOBAL = "target global"
BY_TARGET_FUNCTION = "replaced target function"
BY_TARGET_EXPORT = "target definition"
BY_SCOPE = "lookup scope"
BY_TARGET_SYMTAB = "executable's symbol table"
BY_PATCH = "patch's own copy"
BY_WEAK_ZERO = "unresolved weak (0)"
BY_SHADOW = "process's shadow region"


@dataclass(frozen=True)
class Resolution:
    """Where symbol ``name`` (index ``index`` of the patch's .dynsym) binds.

    ``value`` is a runtime address, except when ``patch_relative`` is set:
    then it is the patch's link-time value and the patch's load bias is added
    when the bias is known.
    """

    index: int
    name: str
    value: int
    how: str
    provider: str | None = None
    patch_relative: bool = False
    ifunc_resolver: int | None = None

    def runtime(self, patch_bias: int) -> int:
        return self.value + patch_bias if self.patch_relative else self.value

    def describe(self) -> str:
        where = " in %s" % self.provider if self.provider else ""
        val = ("patch+%#x" % self.value) if self.patch_relative else ("%#x" % self.value)
        ifunc = " (IFUNC, resolver %#x)" % self.ifunc_resolver if self.ifunc_resolver is not None else ""
        return "%s -> %s by %s%s%s" % (self.name, val, self.how, where, ifunc)


def _is_exported(sym) -> bool:
    return sym.defined and sym.bind in _EXPORT_BINDS and sym.visibility in _EXPORT_VIS and sym.type != "STT_TLS"


def version_matches(sym, version: str | None, provider_has_versions: bool) -> bool:
    """The dynamic linker's version check for a definition ``sym``.

    A versioned reference needs exactly that version (hidden ``@`` versions
    count), or an unversioned definition in a provider that defines no
    versions (no .gnu.version_d), as glibc's check_match does; an unversioned
    reference takes an unversioned or default (``@@``) definition.
    """
    if version is not None:
        return sym.version == version or (sym.version is None and not provider_has_versions)
    return not sym.version_hidden


class SymbolResolver:
    """Binds the patch's symbols for ``target`` in ``view``; see the module docstring."""

    def __init__(self, view: ProcessView, target: MappedObject, patch_image, livepatch, target_image=None,
                 ifunc_results: dict[int, int] | None = None):
        self.view = view
        self.target = target
        self.patch = patch_image
        self.livepatch = livepatch
        self.target_image = target_image if target_image is not None else view.image(target)
        self.ifunc_results = dict(ifunc_results or {})
        self._by_name_cache: dict[int, tuple[dict, bool]] = {}
        self._scope: list[MappedObject] | None = None

    # ---- the lookup scope ------------------------------------------------------------

    def _objects_by_name(self) -> dict[str, MappedObject]:
        names = {}
        for o in self.view.objects:
            if o.is_vdso:
                continue
            soname = o.soname or self.view.image(o).soname
            for n in (soname, os.path.basename(o.path)):
                if n and n not in names:
                    names[n] = o
        return names

    def _bfs(self, roots: list[MappedObject], seen: set[int]) -> list[MappedObject]:
        """Breadth-first DT_NEEDED closure of ``roots`` (skipping ``seen``), in load order."""
        names = self._objects_by_name()
        out: list = []
        queue: deque = deque()
        for r in roots:
            if id(r) not in seen:
                seen.add(id(r))
                out.append(r)
                queue.append(r)
        while queue:
            o = queue.popleft()
            for n in self.view.image(o).needed:
                dep = names.get(n) or names.get(os.path.basename(n))
                if dep is not None and id(dep) not in seen:
                    seen.add(id(dep))
                    out.append(dep)
                    queue.append(dep)
        return out

    def global_scope(self) -> list[MappedObject]:
        """Main executable, preloads, their BFS DT_NEEDED closure, then RTLD_GLOBAL dlopens."""
        objs = [o for o in self.view.objects if not o.is_vdso]
        seen: set[int] = set()
        main = [o for o in objs if o.is_main_executable]
        pre = [o for o in objs if o.how_loaded == LOADED_PRELOAD]
        scope = self._bfs(main + pre, seen)
        for o in objs:
            if o.how_loaded == LOADED_DLOPEN_GLOBAL and id(o) not in seen:
                scope += self._bfs([o], seen)
        return scope

    @property
    def scope(self) -> list[MappedObject]:
        """The full lookup scope for the patch: global scope, then the target's own closure if outside it."""
        if self._scope is None:
            scope = self.global_scope()
            if all(o is not self.target for o in scope):
                scope += self._bfs([self.target], {id(o) for o in scope})
            self._scope = scope
        return self._scope

    # ---- definitions ----------------------------------------------------------------

    def _exports(self, obj: MappedObject, image=None) -> tuple[dict, bool]:
        key = id(obj)
        if key not in self._by_name_cache:
            img = image if image is not None else self.view.image(obj)
            d: dict[str, list] = {}
            has_versions = any(sec.type == "SHT_GNU_verdef" for sec in img.sections)
            for s in img.dynsyms:
                if s.name and _is_exported(s):
                    d.setdefault(s.name, []).append(s)
            self._by_name_cache[key] = (d, has_versions)
        return self._by_name_cache[key]

    def find_definition(self, obj: MappedObject, name: str, version: str | None, image=None):
        """The exported definition of ``name``/``version`` in ``obj``, or None."""
        d, has_versions = self._exports(obj, image)
        for s in d.get(name, ()):
            if version_matches(s, version, has_versions):
                return s
        return None

    @staticmethod
    def _address(obj: MappedObject, sym) -> int:
        # SHN_ABS values are absolute; everything else moves with the object.
        return sym.value if sym.shndx == SHN_ABS else obj.load_bias + sym.value

    # ---- IFUNC ----------------------------------------------------------------------------

    def _target_ifunc_values(self) -> set[int]:
        if not hasattr(self, "_tifunc"):
            img = self.target_image
            self._tifunc = {s.value for s in list(img.symtab) + list(img.dynsyms)
                            if s.type == "STT_GNU_IFUNC" and s.defined}
        return self._tifunc

    def _read_word(self, addr: int) -> int | None:
        if self.view.memory is None:
            return None
        try:
            raw = self.view.memory.read(addr, 8)
        except (NsbError, OSError):
            return None
        return struct.unpack("<Q", raw)[0] if len(raw) == 8 else None

    def ifunc_implementation(self, name: str, provider: MappedObject, resolver: int) -> int:
        """The resolved implementation of IFUNC ``name`` whose resolver is at runtime ``resolver``."""
        if resolver in self.ifunc_results:
            return self.ifunc_results[resolver]
        # An IRELATIVE slot of the provider (static binaries, libc's internal calls).
        pimg = self.target_image if provider is self.target else self.view.image(provider)
        for r in pimg.relocations:
            if r.type == R_X86_64_IRELATIVE and provider.load_bias + r.addend == resolver:
                v = self._read_word(provider.load_bias + r.offset)
                if v is not None and self._plausible_impl(v, provider, resolver):
                    return v
        # A GOT entry bound to this symbol in any loaded object; else a function pointer in data
        # (libsqlite3's table of SQL math functions holds libm's trunc, and nothing else does): ld.so
        # stores the implementation there too.  RELRO data cannot have changed since; writable data
        # could, so its value is taken last and only if it is no exported function of the provider
        # (glibc's implementations are local symbols; a pointer the program re-aimed at floor is not).
        writable = []
        for o in self.view.objects:
            if o.is_vdso:
                continue
            img = self.target_image if o is self.target else self.view.image(o)
            for r in img.relocations:
                if r.symbol != name:
                    continue
                if r.type == R_X86_64_64 and not r.addend and not _in_relro(img, r.offset):
                    writable.append(o.load_bias + r.offset)
                elif r.type in (R_X86_64_GLOB_DAT, R_X86_64_JUMP_SLOT) or (r.type == R_X86_64_64 and not r.addend):
                    v = self._read_word(o.load_bias + r.offset)
                    if v is not None and self._plausible_impl(v, provider, resolver):
                        return v
        exported = None
        for at in writable:
            v = self._read_word(at)
            if v is None or not self._plausible_impl(v, provider, resolver):
                continue
            if exported is None:
                pimg = self.target_image if provider is self.target else self.view.image(provider)
                exported = {provider.load_bias + s.value for s in pimg.dynsyms
                            if s.defined and s.type == "STT_FUNC" and _is_exported(s)}
            if v not in exported:
                return v
        raise IfuncNeedsResolver(name, resolver)

    def _plausible_impl(self, v: int, provider: MappedObject, resolver: int) -> bool:
        # A lazily bound slot still points at its owner's PLT; a resolved one points at code of the
        # provider other than the resolver itself, or at the vDSO (glibc's gettimeofday and time
        # resolve to the kernel's __vdso_ functions).
        homes = [provider] + [o for o in self.view.objects if o.is_vdso]
        return v != resolver and any(m.contains(v) and (m.perms is None or m.executable)
                                     for o in homes for m in o.ranges)

    # ---- resolution ---------------------------------------------------------------------

    def _marked(self, marks, idx):
        for m in marks:
            if m.idx == idx:
                return m.addr
        return None

    def _maybe_ifunc_target(self, res: Resolution, link_addr: int) -> Resolution:
        if link_addr in self._target_ifunc_values():
            impl = self.ifunc_implementation(res.name, self.target, res.value)
            return Resolution(res.index, res.name, impl, res.how, res.provider, False, res.value)
        return res

    def resolve_index(self, idx: int) -> Resolution:
        """Resolve symbol ``idx`` of the patch's .dynsym; raises UnresolvedSymbol / IfuncNeedsResolver."""
        syms = self.patch.dynsyms
        if not 0 < idx < len(syms):
            raise BadRelocation("%s: relocation names symbol index %d, not in its .dynsym (%d symbols)"
                                % (self.patch.path, idx, len(syms)))
        sym = syms[idx]
        name = sym.name
        bias = self.target.load_bias
        tname = os.path.basename(self.target.path)

        addr = self._marked(self.livepatch.manual_symbols, idx)
        if addr is not None:
            return self._maybe_ifunc_target(Resolution(idx, name, bias + addr, BY_MANUAL, tname), addr)
        if self.target_image.is_executable:
            addr = self._marked(self.livepatch.global_symbols, idx)
            if addr is not None:
                return self._maybe_ifunc_target(Resolution(idx, name, bias + addr, BY_GLOBAL, tname), addr)

        if sym.defined:
            for fj in self.livepatch.func_jumps:
                if fj.patch_value == sym.value and (fj.name == name or sym.type == "STT_FUNC"):
                    return Resolution(idx, name, bias + fj.func_value, BY_TARGET_FUNCTION, tname)
            tdef = self.find_definition(self.target, name, None, self.target_image)
            if tdef is not None:
                return self._bind_definition(idx, name, self.target, tdef, BY_TARGET_EXPORT)
            return Resolution(idx, name, sym.value, BY_PATCH, None, patch_relative=True)

        if name == SHADOW_SYMBOL:
            if self.view.shadow_region is None and self.view.shadow_planned:
                return Resolution(idx, name, 0, BY_SHADOW, SHADOW_OBJFILE + " (mapped by the apply)")
            if self.view.shadow_region is None:
                raise UnresolvedSymbol(name, "%s uses shadow variables but the process has no shadow region (%s): "
                                       "the apply maps one first" % (os.path.basename(self.patch.path),
                                                                     SHADOW_OBJFILE))
            return Resolution(idx, name, self.view.shadow_region, BY_SHADOW, SHADOW_OBJFILE)

        for o in self.scope:
            img = self.target_image if o is self.target else None
            d = self.find_definition(o, name, sym.version, img)
            if d is not None:
                return self._bind_definition(idx, name, o, d, BY_SCOPE)

        if self.target_image.is_executable:
            # Globals of an executable that the generator left to run time (IFUNCs:
            # strlen in a static binary) are in its .symtab only.
            for d in self.target_image.symtab:
                if d.name == name and d.defined and d.bind in _EXPORT_BINDS and d.type != "STT_TLS":
                    return self._bind_definition(idx, name, self.target, d, BY_TARGET_SYMTAB)

        if sym.bind == "STB_WEAK":
            return Resolution(idx, name, 0, BY_WEAK_ZERO)
        ver = "@" + sym.version if sym.version else ""
        raise UnresolvedSymbol(name, "symbol %s%s needed by %s is defined nowhere in the process's lookup scope"
                               " (%d objects)" % (name, ver, os.path.basename(self.patch.path), len(self.scope)))

    def _bind_definition(self, idx, name, obj, d, how) -> Resolution:
        addr = self._address(obj, d)
        provider = os.path.basename(obj.path)
        if d.type == "STT_GNU_IFUNC":
            impl = self.ifunc_implementation(name, obj, addr)
            return Resolution(idx, name, impl, how, provider, False, addr)
        return Resolution(idx, name, addr, how, provider)

    def resolve_all(self) -> tuple[dict[int, Resolution], list[NsbError]]:
        """Resolve every symbol the patch's relocations name; problems are collected, not raised."""
        out: dict[int, Resolution] = {}
        problems: list[NsbError] = []
        for r in self.patch.relocations:
            if r.sym_index and r.sym_index not in out:
                try:
                    out[r.sym_index] = self.resolve_index(r.sym_index)
                except (UnresolvedSymbol, IfuncNeedsResolver) as e:
                    if not any(str(p) == str(e) for p in problems):
                        problems.append(e)
        return out, problems


def _in_relro(image, vaddr: int) -> bool:
    """True when link-time ``vaddr`` of ``image`` lies in its PT_GNU_RELRO span (read-only once relocated)."""
    return any(p.type == PT_GNU_RELRO and p.vaddr <= vaddr < p.vaddr + p.memsz for p in image.program_headers)
