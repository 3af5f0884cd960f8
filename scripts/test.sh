#!/usr/bin/env bash
# Set up a fresh machine and pass the tests: a virtualenv in .venv with chaos_shims and the
# pinned versions of the libraries it patches, then the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[test,lint]"
# The target libraries' own test suites (pinned sdists, once, into .cache/target-suites/) for
# tests/reliability/test_transparency.py, which then fails rather than skips without them.
VIRTUAL_ENV="$PWD/.venv" bash scripts/fetch_target_suites.sh
export REQUIRE_TARGET_SUITES=1
.venv/bin/python -m pytest -q "$@"
