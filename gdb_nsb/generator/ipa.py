"""What GCC may have assumed about a function, from its unit's ``DW_AT_producer`` (docs/IPA.md).

The decision table, measured on GCC 12 (``gcc -Q --help=optimizers`` for the defaults of each
level, the fixtures under tests/fixtures/ipa for the effect of each pass):

* caller-side passes: callers of a function in its compile unit were compiled against what that
  function's code does (registers it clobbers, memory it reads or writes, purity, stack
  alignment it needs); a replacement with other code breaks those callers;
* callee-side passes: the function's own code was specialised for what its callers pass
  (constants, value ranges, known bits); a ``-O0`` replacement assumes nothing, but a patch that
  *calls* the old code with other values gets wrong results;
* clone passes: the specialised code lives in a clone (``f.constprop.N``, ``f.isra.N``,
  ``f.part.N``) with another calling convention; a patch must never call the clone as ``f``.

None of this applies to an interposable function (see :func:`interposable`).  A unit compiled by
a compiler or GCC major the table does not model is refused, naming its producer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# GCC majors whose defaults and pass effects were measured (docs/IPA.md says how to add one).
MODELLED_GCC = (12,)

# Passes whose assumptions callers in the unit depend on.  ipa-icf is caller-side too, but its
# check is the folded-code check (another symbol at the entry), not a list of callers.
CALLER_SIDE = ("ipa-ra", "ipa-pure-const", "ipa-modref", "ipa-reference", "ipa-stack-alignment", "ipa-pta")
# Passes that rewrite a local (static, address never taken) function's own code in place for
# its callers' values; they run inside ipa-cp (without -fipa-cp they do nothing: measured).
IN_PLACE_CALLEE = ("ipa-vrp", "ipa-bit-cp")

_O1 = {"ipa-pure-const", "ipa-reference", "ipa-reference-addressable", "ipa-stack-alignment", "ipa-modref"}
_O2 = _O1 | {"ipa-ra", "ipa-icf-functions", "ipa-icf-variables", "ipa-cp", "ipa-vrp", "ipa-bit-cp", "ipa-sra"}
# GCC 12's defaults per -O level (gcc -Q --help=optimizers -O<level>, IPA flags only).
GCC12_LEVELS = {
    "0": {"ipa-stack-alignment"},
    "g": _O1 - {"ipa-modref"},
    "1": _O1,
    "2": _O2, "3": _O2, "s": _O2, "z": _O2, "fast": _O2,
}
# What -flive-patching=inline-clone turns off in GCC 12 (the diff of gcc -Q --help=optimizers);
# inline-only-static also turns off cloning (ipa-cp, ipa-sra).
LIVE_PATCHING_OFF = {"ipa-ra", "ipa-pure-const", "ipa-modref", "ipa-reference", "ipa-reference-addressable",
                     "ipa-stack-alignment", "ipa-icf-functions", "ipa-icf-variables", "ipa-vrp", "ipa-bit-cp"}
LIVE_PATCHING_ONLY_STATIC_OFF = LIVE_PATCHING_OFF | {"ipa-cp", "ipa-sra"}
# Flags that stand for others.
_GROUPS = {"ipa-icf": ("ipa-icf-functions", "ipa-icf-variables")}
_KNOWN = set(_O2) | {"ipa-pta"}


@dataclass
class Producer:
    """A compile unit's producer, read for what the table needs."""

    text: str
    compiler: str  # 'gcc', 'clang', 'as' (hand-written assembly), 'unknown'
    major: int | None = None
    level: str | None = None  # '0', '1', '2', '3', 's', 'z', 'g', 'fast'; None: not recorded
    flags: dict = field(default_factory=dict)  # explicit -f[no-]X, last one wins: name -> bool
    live_patching: str | None = None  # 'inline-clone' / 'inline-only-static'
    pic: bool = False  # -fpic / -fPIC last among the pic/pie options (not -fpie: it binds locally)
    semantic_interposition: bool = True

    def modelled(self):
        return self.compiler == "as" or (self.compiler == "gcc" and self.major in MODELLED_GCC)

    def in_effect(self, optimised_hint=False):
        """The set of IPA flags in effect (GCC only).  Without a recorded -O level (a unit built
        with -gno-record-gcc-switches) the unit counts as -O2 when ``optimised_hint`` (it has
        call-site DIEs, which GCC emits only when optimising), else as -O0."""
        level = self.level if self.level is not None else ("2" if optimised_hint else "0")
        on = set(GCC12_LEVELS.get(level, _O2))
        if self.live_patching == "inline-clone":
            on -= LIVE_PATCHING_OFF
        elif self.live_patching == "inline-only-static":
            on -= LIVE_PATCHING_ONLY_STATIC_OFF
        for name, value in self.flags.items():
            for member in _GROUPS.get(name, (name,)):
                if value:
                    on.add(member)
                else:
                    on.discard(member)
        return on


def parse_producer(text):
    """The :class:`Producer` of a ``DW_AT_producer`` string (None or '' -> compiler 'unknown')."""
    text = text or ""
    words = text.split()
    if text.startswith("GNU AS") or text.startswith("GNU assembler"):
        return Producer(text, "as")
    if text.startswith("GNU ") and len(words) >= 3 and "clang" not in text:
        version = next((w for w in words[1:4] if w[:1].isdigit()), None)
        major = int(version.split(".")[0]) if version and version.split(".")[0].isdigit() else None
        p = Producer(text, "gcc", major=major)
    elif "clang" in text:
        return Producer(text, "clang")
    else:
        return Producer(text, "unknown")
    for w in words:
        if w.startswith("-O"):
            lvl = w[2:] or "1"
            p.level = lvl if lvl in GCC12_LEVELS else ("3" if lvl.isdigit() else p.level)
        elif w in ("-fpic", "-fPIC"):
            p.pic = True
        elif w in ("-fpie", "-fPIE", "-fno-pic", "-fno-PIC", "-fno-pie", "-fno-PIE"):
            p.pic = False
        elif w == "-fno-semantic-interposition":
            p.semantic_interposition = False
        elif w == "-fsemantic-interposition":
            p.semantic_interposition = True
        elif w.startswith("-flive-patching"):
            p.live_patching = w.partition("=")[2] or "inline-clone"
        elif w.startswith("-fno-ipa-") and w[5:] in _KNOWN | set(_GROUPS):
            p.flags[w[5:]] = False
        elif w.startswith("-fipa-") and w[2:] in _KNOWN | set(_GROUPS):
            p.flags[w[2:]] = True
    return p


def unmodelled_problem(producer, optimised_hint):
    """Why a unit's IPA assumptions cannot be known (a refusal text), or None.

    An unknown compiler or GCC major is a problem only when the unit was optimised: a recorded
    -O level above 0, or (nothing recorded) call-site DIEs, which compilers emit only when
    optimising."""
    p = producer if isinstance(producer, Producer) else parse_producer(producer)
    if p.modelled():
        return None
    optimised = (p.level not in (None, "0")) if p.level is not None else optimised_hint
    if p.compiler == "clang" and p.level is None and not optimised_hint:
        optimised = False
    if not optimised:
        return None
    what = ("GCC %s" % p.major) if p.compiler == "gcc" else ("compiler \"%s\"" % (p.text or "without DW_AT_producer"))
    return ("it was optimised by %s (producer \"%s\"), whose inter-procedural assumptions the generator does not "
            "model (modelled: GCC %s; docs/IPA.md)" % (what, p.text, ", ".join(str(m) for m in MODELLED_GCC)))


def caller_side(producer, optimised_hint=False):
    """The caller-side passes in effect in a unit, in table order (GCC only; [] otherwise)."""
    p = producer if isinstance(producer, Producer) else parse_producer(producer)
    if p.compiler != "gcc":
        return []
    on = p.in_effect(optimised_hint)
    return ["-f" + name for name in CALLER_SIDE if name in on]


def in_place_callee(producer, optimised_hint=False):
    """The passes that may have rewritten a local function's code for its callers' values, or []."""
    p = producer if isinstance(producer, Producer) else parse_producer(producer)
    if p.compiler != "gcc":
        return []
    on = p.in_effect(optimised_hint)
    if "ipa-cp" not in on:
        return []
    return ["-f" + name for name in IN_PLACE_CALLEE if name in on]


def interposable(producer, symbol, declared_inline, direct_calls, plt_calls_ok):
    """True when GCC could assume nothing about the function (it may be interposed at run time).

    All of: the unit was built -fpic (not -fpie) without -fno-semantic-interposition; the
    function's symbol is global or weak with default visibility; it is not declared ``inline``
    (GCC may inline an inline function's body even when interposable); no call in the unit
    reaches its entry directly (``direct_calls``), every one going through the PLT or the GOT
    (``plt_calls_ok``)."""
    p = producer if isinstance(producer, Producer) else parse_producer(producer)
    if p.compiler != "gcc" or not p.pic or not p.semantic_interposition:
        return False
    if symbol is None or symbol.bind not in ("STB_GLOBAL", "STB_WEAK") or symbol.visibility != "STV_DEFAULT":
        return False
    return not declared_inline and not direct_calls and plt_calls_ok


__all__ = ["Producer", "parse_producer", "unmodelled_problem", "caller_side", "in_place_callee", "interposable",
           "CALLER_SIDE", "IN_PLACE_CALLEE", "MODELLED_GCC", "GCC12_LEVELS", "LIVE_PATCHING_OFF"]
