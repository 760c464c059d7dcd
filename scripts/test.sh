#!/usr/bin/env bash
# The README's test command: set up whatever is missing, then run the whole test suite.
# Extra arguments go to pytest (for example: bash scripts/test.sh -k golden).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
