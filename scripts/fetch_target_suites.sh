#!/usr/bin/env bash
# Fetch the target libraries' own test suites for tests/reliability/test_transparency.py:
# download their pinned source distributions (pip download --no-binary :all: --no-deps) into
# .cache/target-suites/ (git-ignored), unpack them, and install the extra pinned test
# dependencies the chosen test modules need into the current virtualenv.
#
# What is fetched is listed once, in tests/reliability/transparency_support/target_suites.txt.
# Idempotent: an unpacked sdist and an installed pin are left alone, so a second run only reads.
# This is the only step that uses the network (the package registry); the tests never do.
set -euo pipefail
cd "$(dirname "$0")/.."

MANIFEST=tests/reliability/transparency_support/target_suites.txt
CACHE=.cache/target-suites
if [[ -n "${VIRTUAL_ENV:-}" ]]; then
  PYTHON="$VIRTUAL_ENV/bin/python"
elif [[ -x .venv/bin/python ]]; then
  PYTHON=.venv/bin/python
else
  PYTHON=python3
fi

mkdir -p "$CACHE/downloads"

while read -r kind spec; do
  [[ "$kind" == "sdist" ]] || continue
  name="${spec%%==*}"
  version="${spec##*==}"
  folder="$CACHE/$name-$version"
  # The marker is written last: an interrupted unpack is done again.
  [[ -f "$folder/.unpacked" ]] && continue
  archive="$CACHE/downloads/$name-$version.tar.gz"
  if [[ ! -f "$archive" ]]; then
    echo "fetch_target_suites: downloading the $spec sdist"
    "$PYTHON" -m pip download -q --no-deps --no-binary :all: --dest "$CACHE/downloads" "$spec"
  fi
  rm -rf "$folder" "$folder.partial"
  mkdir -p "$folder.partial"
  tar -xzf "$archive" -C "$folder.partial" --strip-components=1
  mv "$folder.partial" "$folder"
  touch "$folder/.unpacked"
  echo "fetch_target_suites: unpacked $folder"
done < <(grep -v '^[[:space:]]*#' "$MANIFEST")

# Only the pins not installed at exactly that version (pip itself would take seconds to say so).
missing=$("$PYTHON" - "$MANIFEST" <<'PY'
import sys
from importlib.metadata import PackageNotFoundError, version

for line in open(sys.argv[1], encoding="utf-8"):
    fields = line.split()
    if len(fields) != 2 or fields[0] != "test-dep":
        continue
    name, wanted = fields[1].split("==")
    try:
        if version(name) == wanted:
            continue
    except PackageNotFoundError:
        pass
    print(fields[1])
PY
)
if [[ -n "$missing" ]]; then
  echo "fetch_target_suites: installing" $missing
  # shellcheck disable=SC2086 # one argument per pin
  "$PYTHON" -m pip install -q $missing
fi
echo "fetch_target_suites: target suites ready in $CACHE"
