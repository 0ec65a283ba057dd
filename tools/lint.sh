#!/usr/bin/env bash
# The lint gate (./run-tests runs it before pytest; NSB_LINT=0 skips it): ruff over the whole tree and
# mypy on the pure packages, both configured in pyproject.toml.  Any finding fails the run.
set -uo pipefail
root=$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)
venv="${NSB_VENV:-$root/.venv}"
cd "$root"
if [ ! -x "$venv/bin/ruff" ] || [ ! -x "$venv/bin/mypy" ]; then
    echo "lint: ruff or mypy missing in $venv (./run-tests installs the test extra)" >&2
    exit 1
fi
status=0
"$venv/bin/ruff" check --quiet . || status=1
"$venv/bin/mypy" || status=1
if [ "$status" -ne 0 ]; then
    echo "lint: findings above (ruff check --fix fixes some; NSB_LINT=0 ./run-tests skips the gate)" >&2
fi
exit "$status"
