"""The examples run as documented."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[1]
CHAOS_SHIMS = str(Path(sys.executable).with_name("chaos-shims"))


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAOS_SHIMS_")}
    return {**env, "PYTHONPATH": str(ROOT), **extra}


def test_rest_bot_survives_429s_under_chaos_shims_run() -> None:
    result = subprocess.run(
        [CHAOS_SHIMS, "run", "--set", "exch_429=0.3", "--set", "dry_run=false",
         "--set", "burst_on_sec=0", "--set", "seed=5", "--",
         sys.executable, "examples/rest_bot.py", "--loopback", "--iterations", "15"],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=90, check=False)
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["quotes"] + outcome["skipped"] == 15
    assert outcome["quotes"] >= 13


def test_auto_activation_example() -> None:
    result = subprocess.run(
        [sys.executable, "examples/auto_activation.py"], cwd=ROOT, capture_output=True,
        text=True, timeout=90, check=False,
        env=_env(CHAOS_SHIMS_ENABLED="1", CHAOS_SHIMS_DRY_RUN="0", CHAOS_SHIMS_BURST_ON_SEC="0",
                 CHAOS_SHIMS_EXCH_5XX="0.5", CHAOS_SHIMS_SEED="7",
                 CHAOS_SHIMS_INCLUDE_OPS="fetch_ticker"))
    assert result.returncode == 0, result.stderr
    outcomes = result.stdout.split()
    assert len(outcomes) == 10 and "ok" in outcomes
    assert {"ExchangeNotAvailable", "RequestTimeout"} & set(outcomes)


def test_marker_example_suite_passes() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "examples/test_bot_under_chaos.py"],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=90, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout
