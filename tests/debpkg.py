"""Debian source packages built the way Debian builds them, cached outside the checkout (issue 13 item 6).

    build("memcached") -> Package

``apt-get source`` and ``apt-get build-dep`` with a ``deb-src`` entry derived at run time from the
machine's own apt sources (the mirror already configured for bookworm main; no host name is written
here), then ``dpkg-buildpackage -b -uc -us`` with ``DEB_BUILD_OPTIONS=nocheck``: stripped binaries,
``-dbgsym`` debug files (``.deb``/``.ddeb``), dwz where the package's debhelper runs it,
``-ffile-prefix-map`` from ``dpkg-buildflags``.  A package in ``PARTIAL`` (sqlite3) builds only the binary
packages the tests use, through the package's own debian/rules (see there).  Every produced package
is unpacked into one tree (``Package.root``), so the binaries sit beside ``usr/lib/debug/.build-id``; the
built source tree stays too (headers, ``config.h``, generated files) for patches written against it.

The cache (``~/.cache/nsb-realprog``, or ``NSB_REALPROG_CACHE``) is keyed by package, the build
recipe and the compiler's version: a second call, or a second run, skips the build.  Building needs
root (build-deps) and Debian's apt; without them ``Unavailable`` is raised and the tests skip, naming
why.  Also a command, for CI to prepare the machine before the suite:

    python3 tests/debpkg.py setup sqlite3 memcached     # deb-src entry + build-deps
    python3 tests/debpkg.py build sqlite3 memcached     # the cached builds, with their times
"""

import fcntl
import glob
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import time

CACHE = os.environ.get("NSB_REALPROG_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "nsb-realprog")
RECIPE = "1"  # bump when the build procedure below changes: every cached build is redone
SUITE, COMPONENT = "bookworm", "main"
SRC_LIST = "/etc/apt/sources.list.d/nsb-realprog-src.sources"
BUILD_OPTIONS = "nocheck parallel=%d" % min(2, os.cpu_count() or 1)
APT_ENV = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
JOBS = min(2, os.cpu_count() or 1)

# Packages built in part: the full build does far more than the tests need (sqlite3's builds the Tcl
# extension, the tools, the docs: over 110 min on a loaded 2-core machine).  The fragment is read by make
# together with the package's own debian/rules and run by dpkg-buildpackage (``-T nsb-partial``), so the
# tree is configured by the package's configure rule, compiled with its exported build flags, installed
# into debian/tmp and split by debhelper (dh_install, dh_strip: the stripped files and the dbgsym tree
# with its build-id links) exactly as the package's binary-arch does, for the binary packages named.
PARTIAL = {
    "sqlite3": {
        "packages": ("libsqlite3-0", "sqlite3"),
        "rules": (
            "nsb-partial: configure-stamp\n"
            "\t$(MAKE) -j%(jobs)d libsqlite3.la sqlite3\n"
            "\t$(MAKE) lib_install DESTDIR=$(DESTDIR)\n"
            "\tinstall -d $(DESTDIR)/usr/bin\n"
            "\t./libtool --mode=install install -c sqlite3 $(DESTDIR)/usr/bin\n"
            "\tchrpath -d $(DESTDIR)/usr/bin/sqlite3\n"
            "\tdh_install %(packages)s --sourcedir=$(DESTDIR)\n"
            "\tdh_strip %(packages)s\n"),
    },
}


class Unavailable(Exception):
    """This machine cannot build Debian packages (not Debian, not root, no mirror configured)."""


# ----------------------------------------------------------------------------- apt sources

def _deb822(text):
    """Stanzas of a deb822 ``.sources`` file as dicts (continuation lines joined, comments dropped)."""
    out, cur, key = [], {}, None
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        if not line.strip():
            if cur:
                out.append(cur)
            cur, key = {}, None
        elif line[0] in " \t" and key:
            cur[key] += " " + line.strip()
        elif ":" in line:
            key, _, value = line.partition(":")
            key = key.strip().lower()
            cur[key] = value.strip()
    if cur:
        out.append(cur)
    return out


def apt_entries(etc="/etc/apt"):
    """Every enabled apt entry of the machine: (type, uri, suite, components, signed_by)."""
    entries = []
    paths = [os.path.join(etc, "sources.list")] + sorted(glob.glob(os.path.join(etc, "sources.list.d", "*.list")))
    for path in paths:
        if not os.path.isfile(path):
            continue
        with open(path) as f:
            for line in f:
                words = line.split("#", 1)[0].split()
                signed = None
                if len(words) > 1 and words[1].startswith("["):
                    opts = []
                    while words and not words[1].endswith("]"):
                        opts.append(words.pop(1))
                    opts.append(words.pop(1))
                    for o in " ".join(opts).strip("[]").split():
                        if o.startswith("signed-by="):
                            signed = o.split("=", 1)[1]
                if len(words) >= 4 and words[0] in ("deb", "deb-src"):
                    entries.append((words[0], words[1], words[2], words[3:], signed))
    for path in sorted(glob.glob(os.path.join(etc, "sources.list.d", "*.sources"))):
        with open(path) as f:
            for st in _deb822(f.read()):
                if st.get("enabled", "yes").lower() == "no":
                    continue
                for typ in st.get("types", "").split():
                    for uri in st.get("uris", "").split():
                        for suite in st.get("suites", "").split():
                            entries.append((typ, uri, suite, st.get("components", "").split(),
                                            st.get("signed-by")))
    return entries


def mirror(entries=None, suite=SUITE, component=COMPONENT):
    """(uri, signed_by) of the machine's first binary entry for ``suite`` ``component``."""
    for typ, uri, s, comps, signed in (apt_entries() if entries is None else entries):
        if typ == "deb" and s == suite and component in comps:
            return uri, signed
    raise Unavailable("no apt entry for %s %s on this machine" % (suite, component))


def deb_src_stanza(entries=None):
    """The deb822 ``deb-src`` stanza for the configured mirror."""
    uri, signed = mirror(entries)
    text = "Types: deb-src\nURIs: %s\nSuites: %s\nComponents: %s\n" % (uri, SUITE, COMPONENT)
    if signed:
        text += "Signed-By: %s\n" % signed
    return text


def _run(argv, cwd=None, env=None, timeout=3600, log=None):
    r = subprocess.run(argv, cwd=cwd, env=env or APT_ENV, timeout=timeout, stdin=subprocess.DEVNULL,
                       stdout=log or subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        tail = r.stdout[-3000:] if r.stdout else "(see %s)" % getattr(log, "name", "log")
        raise RuntimeError("%s failed (exit %d):\n%s" % (" ".join(argv), r.returncode, tail))
    return r.stdout


def _check_machine():
    if not shutil.which("apt-get") or not shutil.which("dpkg-buildpackage"):
        raise Unavailable("apt-get and dpkg-buildpackage (dpkg-dev) are needed to build Debian packages")
    if os.geteuid() != 0:
        raise Unavailable("building Debian packages needs root (apt-get build-dep)")


def _has_source(package):
    r = subprocess.run(["apt-cache", "showsrc", package], capture_output=True, text=True, timeout=120)
    return r.returncode == 0 and "Package: " in r.stdout


def setup(packages):
    """The deb-src entry (when apt knows no source for a package yet) and each package's build-deps."""
    _check_machine()
    if not all(_has_source(p) for p in packages):
        with open(SRC_LIST, "w") as f:
            f.write(deb_src_stanza())
        _run(["apt-get", "update", "-q"])
    _run(["apt-get", "build-dep", "-y", "-q"] + list(packages))


# ----------------------------------------------------------------------------- builds

class Package:
    """One built package: ``root`` holds every produced .deb/.ddeb unpacked, ``source`` the built tree."""

    def __init__(self, directory, info):
        self.dir = directory
        self.info = info
        self.root = os.path.join(directory, "root")
        self.source = os.path.join(directory, "build", info["source_dir"])
        self.version = info["version"]
        self.build_seconds = info["build_seconds"]

    @property
    def debug_dir(self):
        return os.path.join(self.root, "usr", "lib", "debug")

    def path(self, rel):
        p = os.path.join(self.root, rel.lstrip("/"))
        if not os.path.exists(p):
            raise FileNotFoundError("%s: no %s among the built packages" % (self.info["package"], rel))
        return p

    def unit_flags(self, unit):
        """The preprocessor flags (-D, -I, -include, -std) the package's build gave ``unit`` (a path in the
        source tree), from its compile line in the build log, -I made absolute; -D_FORTIFY_SOURCE is left
        out (it needs optimisation, a patch is built -O0)."""
        with open(os.path.join(self.dir, "build.log"), errors="replace") as f:
            for line in f:
                words = line.split()
                names = [w.strip("'\"").split("`")[-1] for w in words]  # automake: `test -f 'x.c' || ...`x.c
                if "-c" not in words or not any(n == unit or n.endswith("/" + unit) for n in names):
                    continue
                out, take = [], False
                for w in words:
                    if take:
                        out.append(w)
                        take = False
                    elif w in ("-include", "-I", "-D"):
                        out.append(w)
                        take = True
                    elif w.startswith("-D") and not w.startswith("-D_FORTIFY_SOURCE"):
                        out.append(w)
                    elif w.startswith("-I"):
                        out.append("-I" + os.path.normpath(os.path.join(self.source, w[2:])))
                    elif w.startswith("-std="):
                        out.append(w)
                return out
        raise LookupError("%s: no compile line for %s in the build log" % (self.info["package"], unit))

    def buildflags(self):
        """CFLAGS/CPPFLAGS/LDFLAGS as the package's build had them (``dpkg-buildflags`` in its tree)."""
        env = dict(os.environ, DEB_BUILD_OPTIONS=BUILD_OPTIONS)
        out = subprocess.run(["dpkg-buildflags", "--export=make"], cwd=self.source, env=env,
                             capture_output=True, text=True, check=True, timeout=60).stdout
        flags = {}
        for line in out.splitlines():
            if line.startswith("export "):
                k, _, v = line[len("export "):].partition(":=")
                flags[k.strip()] = v.split()
        return flags


def _children_cpu():
    """User+system CPU seconds of every waited-for child so far (the build's cost on an idle machine)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _partial_rules(package):
    """The make fragment of ``package``'s partial build, or None (the whole package is built)."""
    part = PARTIAL.get(package)
    if part is None:
        return None
    return part["rules"] % {"jobs": JOBS, "packages": " ".join("-p" + p for p in part["packages"])}


def _key(package):
    gcc = subprocess.run(["gcc", "--version"], capture_output=True, text=True, timeout=30).stdout.splitlines()[0]
    parts = [package, RECIPE, gcc, BUILD_OPTIONS] + ([_partial_rules(package)] if package in PARTIAL else [])
    h = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:12]
    return "%s-%s" % (package, h)


def cached(package):
    """The cached build of ``package`` or None (no apt, no root needed)."""
    d = os.path.join(CACHE, _key(package))
    stamp = os.path.join(d, "done.json")
    if os.path.isfile(stamp):
        with open(stamp) as f:
            return Package(d, json.load(f))
    return None


def build(package, log=sys.stderr):
    """The package built as Debian builds it (cached: the build runs once per key)."""
    got = cached(package)
    if got is not None:
        return got
    os.makedirs(CACHE, exist_ok=True)
    d = os.path.join(CACHE, _key(package))
    with open(d + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        got = cached(package)
        if got is not None:
            return got
        _check_machine()
        setup([package])
        shutil.rmtree(d, ignore_errors=True)
        work = os.path.join(d, "build")
        os.makedirs(work)
        t0 = time.monotonic()
        _run(["apt-get", "source", "-q", package], cwd=work)
        fetched = time.monotonic() - t0
        srcdirs = [n for n in os.listdir(work) if os.path.isdir(os.path.join(work, n))]
        if len(srcdirs) != 1:
            raise RuntimeError("apt-get source %s unpacked %s" % (package, srcdirs))
        src = os.path.join(work, srcdirs[0])
        env = dict(APT_ENV, DEB_BUILD_OPTIONS=BUILD_OPTIONS)
        rules = _partial_rules(package)
        print("debpkg: building %s%s in %s (DEB_BUILD_OPTIONS=%s)" % (
            package, " (%s only)" % ", ".join(PARTIAL[package]["packages"]) if rules else "", src, BUILD_OPTIONS),
            file=log)
        t1, cpu1 = time.monotonic(), _children_cpu()
        root = os.path.join(d, "root")
        with open(os.path.join(d, "build.log"), "w") as blog:
            if rules is None:
                _run(["dpkg-buildpackage", "-b", "-uc", "-us"], cwd=src, env=env, log=blog)
            else:
                fragment = os.path.join(d, "partial.mk")
                with open(fragment, "w") as f:
                    f.write(rules)
                _run(["dpkg-buildpackage", "-b", "-uc", "-us", "--rules-file=make -f debian/rules -f " + fragment,
                      "-T", "nsb-partial"], cwd=src, env=env, log=blog)
        built, cpu = time.monotonic() - t1, _children_cpu() - cpu1
        if rules is None:
            debs = sorted(glob.glob(os.path.join(work, "*.deb")) + glob.glob(os.path.join(work, "*.ddeb")))
            for deb in debs:
                _run(["dpkg-deb", "-x", deb, root])
        else:
            # what the packages and their -dbgsym packages would hold: debhelper's staging trees
            debs = []
            for p in PARTIAL[package]["packages"]:
                for tree in (os.path.join(src, "debian", p),
                             os.path.join(src, "debian", ".debhelper", p, "dbgsym-root")):
                    if os.path.isdir(tree):
                        shutil.copytree(tree, root, symlinks=True, dirs_exist_ok=True)
                        debs.append(os.path.relpath(tree, os.path.join(src, "debian")))
        version = _run(["dpkg-parsechangelog", "-S", "Version"], cwd=src).strip()
        info = {"package": package, "version": version, "source_dir": srcdirs[0],
                "fetch_seconds": round(fetched, 1), "build_seconds": round(built, 1),
                "build_cpu_seconds": round(cpu, 1), "debs": [p if rules else os.path.basename(p) for p in debs],
                "build_options": BUILD_OPTIONS, "partial": rules is not None}
        with open(os.path.join(d, "done.json.tmp"), "w") as f:
            json.dump(info, f, indent=1)
        os.rename(os.path.join(d, "done.json.tmp"), os.path.join(d, "done.json"))
        print("debpkg: %s %s built in %.0f s, %.0f s CPU (fetch %.0f s)" % (package, version, built, cpu, fetched),
              file=log)
        return Package(d, info)


def main(argv):
    if len(argv) < 2 or argv[0] not in ("setup", "build"):
        print(__doc__, file=sys.stderr)
        return 1
    if argv[0] == "setup":
        setup(argv[1:])
    else:
        for p in argv[1:]:
            b = build(p)
            print("%s %s: %s (built in %s s)" % (p, b.version, b.root, b.build_seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
