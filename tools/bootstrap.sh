# Sourced by ./nsb and ./run-tests: make sure .venv exists, is built from the
# Python that GDB embeds, and holds the pinned dependencies of pyproject.toml.
# Re-installs when pyproject.toml changes (its hash is kept in the venv).

nsb_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
nsb_venv="${NSB_VENV:-$nsb_root/.venv}"

nsb_log() { echo "nsb-setup: $*" >&2; }

nsb_gdb_python() {
    # GDB's sys.executable names /usr/bin/python, which does not exist on
    # Debian 12: derive the interpreter from sysconfig instead.
    command -v gdb >/dev/null 2>&1 || { nsb_log "gdb is not installed (apt-get install -y gdb)"; return 1; }
    gdb -nx -batch -ex 'python import sys, sysconfig; print("NSBPY=%s/python%d.%d" % ((sysconfig.get_config_var("BINDIR"),) + tuple(sys.version_info[:2])))' 2>/dev/null \
        | sed -n 's/^NSBPY=//p'
}

nsb_ensure_venv() {
    local extras="$1" stamp want py
    want=$(sha256sum < "$nsb_root/pyproject.toml" | cut -d' ' -f1)
    stamp="$nsb_venv/.nsb-stamp"
    # The stamp holds the pyproject hash and the extras installed with it; a
    # venv set up for the tests also serves ./nsb (no extras needed).  -F: "[test]" is no bracket pattern.
    if [ -x "$nsb_venv/bin/python" ] && [ -f "$stamp" ] \
        && { grep -qxF "$want $extras" "$stamp" || { [ -z "$extras" ] && grep -q "^$want " "$stamp"; }; }; then
        nsb_ensure_bytecode
        return 0
    fi
    py=$(nsb_gdb_python) || return 1
    if [ -z "$py" ] || [ ! -x "$py" ]; then
        nsb_log "cannot find the Python that GDB embeds (got '$py'); is gdb built with Python?"
        return 1
    fi
    if [ ! -x "$nsb_venv/bin/python" ] || ! "$nsb_venv/bin/python" -c 'import sys; sys.exit(0)' 2>/dev/null \
        || [ "$("$nsb_venv/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')" != "$(basename "$py" | sed 's/^python//')" ]; then
        nsb_log "creating $nsb_venv from $py (the Python GDB embeds)"
        rm -rf "$nsb_venv"
        "$py" -m venv "$nsb_venv" || { nsb_log "venv creation failed (apt-get install -y python3-venv)"; return 1; }
    fi
    nsb_log "installing gdb-nsb and its pinned dependencies into $nsb_venv"
    "$nsb_venv/bin/python" -m pip install -q --disable-pip-version-check -e "$nsb_root$extras" >&2 \
        || { nsb_log "pip install failed"; return 1; }
    echo "$want $extras" > "$stamp"
    nsb_ensure_bytecode
}

nsb_ensure_bytecode() {
    # Every GDB session imports the extension; compiling its sources costs ~100 ms of CPU each time
    # when Python may not write bytecode itself (PYTHONDONTWRITEBYTECODE, a read-only checkout).
    # Compile once, again only when a source is newer than the marker.
    local marker="$nsb_venv/.nsb-bytecode"
    if [ -f "$marker" ] && [ -z "$(find "$nsb_root/gdb_nsb" -name '*.py' -newer "$marker" -print -quit 2>/dev/null)" ]; then
        return 0
    fi
    touch "$marker.new" 2>/dev/null || return 0
    if "$nsb_venv/bin/python" -m compileall -q -j 0 "$nsb_root/gdb_nsb" >/dev/null 2>&1; then
        mv -f "$marker.new" "$marker"
    else
        rm -f "$marker.new"
    fi
}
