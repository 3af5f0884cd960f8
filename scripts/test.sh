#!/usr/bin/env bash
# Set up a fresh machine and pass the tests: a virtualenv in .venv with chaos_shims and the
# pinned versions of the libraries it patches, then the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[test,lint]"
.venv/bin/python -m pytest -q "$@"
