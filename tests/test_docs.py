"""The README's scenario table lists exactly the catalog's scenarios, in its order."""

from __future__ import annotations

import re
from pathlib import Path

from chaos_shims.scenarios import CATALOG

ROOT = Path(__file__).resolve().parents[1]


def test_readme_scenario_table_matches_the_catalog() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Scenarios", 1)[1].split("\n## ", 1)[0]
    keys = re.findall(r"^\| `([a-z0-9_]+)` \|", section, flags=re.MULTILINE)
    assert keys == CATALOG.keys()
