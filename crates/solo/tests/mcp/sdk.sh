#!/usr/bin/env bash
# Creates (or refreshes) a Python virtual environment holding the official MCP Python SDK
# at the pinned versions of requirements.txt: `bash sdk.sh DIR`. Idempotent: does nothing
# when DIR already holds exactly these pins. Prints the environment's python on success.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${1:?usage: sdk.sh VENV_DIR}"
stamp="$venv/.solo-requirements"
if [ -x "$venv/bin/python" ] && cmp -s "$here/requirements.txt" "$stamp"; then
    echo "$venv/bin/python"
    exit 0
fi
rm -rf "$venv"
python3 -m venv "$venv" >&2
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps \
    -r "$here/requirements.txt" >&2
"$venv/bin/python" -c "import mcp, httpx2" >&2
cp "$here/requirements.txt" "$stamp"
echo "$venv/bin/python"
