#!/usr/bin/env bash
# Set up a fresh machine and run the main job: a virtualenv in .venv with chaos_shims and the
# libraries the example bots use, then `chaos-shims demo` (pass --quick, --scenario KEY, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[demo]"
exec .venv/bin/chaos-shims demo "$@"
