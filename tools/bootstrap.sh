# Sourced by ./nsb and ./run-tests: make sure .venv exists, is built from the
# Python that GDB embeds, and holds the pinned dependencies of pyproject.toml.
# Re-installs when pyproject.toml changes (its hash is kept in the venv).

# Every `./nsb` pays this file's cost before its work starts: builtins only on the common path
# (each program spawned costs about a millisecond).
nsb_here=${BASH_SOURCE[0]%/*}
[ "$nsb_here" = "${BASH_SOURCE[0]}" ] && nsb_here=.
nsb_root=$(cd "$nsb_here/.." && pwd)
nsb_venv="${NSB_VENV:-$nsb_root/.venv}"

# An editable install in "compat" mode is one path line in a .pth file.  The default mode installs an
# import hook whose module (it imports pathlib) cost every Python start ~8 ms, the runner's included.
nsb_install_mode="editable_mode=compat"

nsb_log() { echo "nsb-setup: $*" >&2; }

nsb_gdb_python() {
    # GDB's sys.executable names /usr/bin/python, which does not exist on
    # Debian 12: derive the interpreter from sysconfig instead.
    command -v gdb >/dev/null 2>&1 || { nsb_log "gdb is not installed (apt-get install -y gdb)"; return 1; }
    gdb -nx -batch -ex 'python import sys, sysconfig; print("NSBPY=%s/python%d.%d" % ((sysconfig.get_config_var("BINDIR"),) + tuple(sys.version_info[:2])))' 2>/dev/null \
        | sed -n 's/^NSBPY=//p'
}

nsb_ensure_venv() {
    local extras="$1" stamp want py line
    stamp="$nsb_venv/.nsb-stamp"
    # Fast path: a stamp written after pyproject.toml and this file were last changed holds their
    # current hash, so only the extras need comparing (read with builtins: no hash computed).
    if [ -x "$nsb_venv/bin/python" ] && [ "$stamp" -nt "$nsb_root/pyproject.toml" ] \
        && [ "$stamp" -nt "${BASH_SOURCE[0]}" ] && read -r line < "$stamp" \
        && { [ -z "$extras" ] || [ "${line#* }" = "$extras" ]; }; then
        nsb_ensure_bytecode
        return 0
    fi
    # The hash covers pyproject.toml and the install mode below: changing either reinstalls.
    want=$({ cat "$nsb_root/pyproject.toml"; echo "$nsb_install_mode"; } | sha256sum | cut -d' ' -f1)
    # The stamp holds that hash and the extras installed with it; a
    # venv set up for the tests also serves ./nsb (no extras needed).  -F: "[test]" is no bracket pattern.
    if [ -x "$nsb_venv/bin/python" ] && [ -f "$stamp" ] \
        && { grep -qxF "$want $extras" "$stamp" || { [ -z "$extras" ] && grep -q "^$want " "$stamp"; }; }; then
        touch "$stamp"  # up to date (pyproject.toml only touched): the fast path serves the next start
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
    "$nsb_venv/bin/python" -m pip install -q --disable-pip-version-check \
        --config-settings "$nsb_install_mode" -e "$nsb_root$extras" >&2 \
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
