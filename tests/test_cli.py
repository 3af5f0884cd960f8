"""The ``chaos-shims`` command line: the ``run`` bootstrap with real subprocesses, real ccxt and
the loopback exchange; ``config`` and ``scenarios``; bad input."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from chaos_shims.cli import BOOTSTRAP_FOLDER, bootstrap_pythonpath, main, parse_assignments
from chaos_shims.exchange import LoopbackExchange
from chaos_shims.scenarios import CATALOG

pytestmark = pytest.mark.timeout(120)

BIN = Path(sys.executable).parent
CLI = str(BIN / "chaos-shims")
PROGRAMS = Path(__file__).parent / "cli_programs"
BOT = str(PROGRAMS / "bot.py")
PROBE = str(PROGRAMS / "probe.py")
DEPTH = "/api/v3/depth"
HEAVY = ("wrapt", "prometheus_client", "yaml", "asyncio", "ccxt")
#: every REST request faulted, live, only the bot's order book calls (its markets still load)
LIVE_429 = ["--set", "exch_429=1", "--set", "dry_run=false", "--set", "burst_on_sec=0",
            "--set", "include_ops=fetch_order_book"]


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without any chaos setting, with the venv's scripts first on PATH."""
    environ = {name: value for name, value in os.environ.items()
               if not name.startswith("CHAOS_SHIMS_") and name != "PYTHONPATH"}
    environ["PATH"] = os.pathsep.join([str(BIN), environ.get("PATH", os.defpath)])
    environ.update(extra)
    return environ


def run(args: Sequence[str], env: Mapping[str, str] | None = None,
        **extra_env: str) -> subprocess.CompletedProcess[str]:
    environ = dict(env) if env is not None else clean_env()
    environ.update(extra_env)
    return subprocess.run(args, env=environ, capture_output=True, text=True, timeout=60,
                          check=False)


def chaos(*args: str, env: Mapping[str, str] | None = None,
          **extra_env: str) -> subprocess.CompletedProcess[str]:
    return run([CLI, *args], env, **extra_env)


def bot_config(exchange: LoopbackExchange) -> str:
    return json.dumps({**exchange.ccxt_config(), "enableRateLimit": False})


def stdout_json(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def bot_outcomes(seed: int, exchange: LoopbackExchange) -> list[str]:
    result = chaos("run", *LIVE_429, "--set", "exch_429=0.2", "--set", f"seed={seed}", "--",
                   sys.executable, BOT, bot_config(exchange), "30")
    report = stdout_json(result)
    assert report["load_markets"] == "ok"
    outcomes: list[str] = report["fetch_order_book"]
    return outcomes


# -- run: chaos in an unmodified ccxt bot ----------------------------------------------------

def test_run_live_429_reaches_the_bot_as_ddos_protection(exchange: LoopbackExchange) -> None:
    result = chaos("run", *LIVE_429, "--", "python", BOT, bot_config(exchange), "3")

    report = stdout_json(result)
    assert report == {"load_markets": "ok", "fetch_order_book": ["DDoSProtection"] * 3}
    assert exchange.request_count(DEPTH) == 0
    assert exchange.request_count("/api/v3/exchangeInfo") == 1
    assert "LIVE" in result.stderr
    assert "exch_429=1" in result.stderr


def test_run_every_request_faulted_without_a_blast_radius(exchange: LoopbackExchange) -> None:
    result = chaos("run", "--set", "exch_429=1", "--set", "dry_run=false",
                   "--set", "burst_on_sec=0", "--", sys.executable, BOT, bot_config(exchange), "2")

    report = stdout_json(result)
    assert report == {"load_markets": "DDoSProtection",
                      "fetch_order_book": ["DDoSProtection"] * 2}
    assert exchange.request_count() == 0


def test_run_dry_run_by_default_logs_and_leaves_the_bot_unharmed(
        exchange: LoopbackExchange, tmp_path: Path) -> None:
    log_file = tmp_path / "decisions.jsonl"
    result = chaos("run", "--set", "exch_429=1", "--set", "burst_on_sec=0",
                   "--set", "include_ops=fetch_order_book",
                   "--", sys.executable, BOT, bot_config(exchange), "4",
                   CHAOS_SHIMS_LOG_FILE=str(log_file))

    assert stdout_json(result) == {"load_markets": "ok", "fetch_order_book": ["ok"] * 4}
    assert exchange.request_count(DEPTH) == 4
    records = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert len(records) == 4
    assert {(r["scenario"], r["mode"], r["op"]) for r in records} == {
        ("exch_429", "dry_run", "fetch_order_book")}
    assert "dry-run" in result.stderr


def test_run_same_seed_same_outcomes_other_seed_other_outcomes(
        exchange: LoopbackExchange) -> None:
    first = bot_outcomes(7, exchange)
    again = bot_outcomes(7, exchange)
    other = bot_outcomes(8, exchange)

    assert first == again
    assert {"ok", "DDoSProtection"} == set(first)
    assert other != first


def test_run_pins_a_random_seed_and_says_how_to_rerun_it() -> None:
    result = chaos("run", "--set", "exch_429=0.5", "--", sys.executable, PROBE)

    probe = stdout_json(result)
    match = re.search(r"seed (\d+) \(random\); rerun with --set seed=(\d+)", result.stderr)
    assert match is not None, result.stderr
    assert match[1] == match[2] == str(probe["seed"])
    assert len(result.stderr.strip().splitlines()) == 1  # one summary line, nothing else


@pytest.mark.parametrize(("args", "env", "source"), [
    (["--set", "enabled=false"], {}, "--set"),
    ([], {"CHAOS_SHIMS_ENABLED": "0"}, "CHAOS_SHIMS_ENABLED"),
], ids=["set", "env-kill-switch"])
def test_run_enabled_false_wins_and_costs_nothing(
        args: list[str], env: dict[str, str], source: str) -> None:
    result = chaos("run", *args, "--set", "exch_429=1", "--", sys.executable, PROBE,
                   env=clean_env(**env))

    probe = stdout_json(result)
    assert probe["active"] is False
    assert probe["activation_imported"] is False
    assert probe["heavy"] == []
    assert f"chaos is off (enabled=false, from {source})" in result.stderr


# -- run: the bootstrap --------------------------------------------------------------------

def write_user_site(folder: Path, body: str) -> Path:
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(body)
    return folder


def test_run_chains_the_users_sitecustomize(exchange: LoopbackExchange, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    user_site = write_user_site(tmp_path / "site", (
        "import os\n"
        "with open(os.environ['USER_SITE_MARKER'], 'a') as marker:\n"
        "    marker.write(os.environ.get('CHAOS_SHIMS_ENABLED', '-') + '\\n')\n"))
    env = clean_env(PYTHONPATH=str(user_site), USER_SITE_MARKER=str(marker))

    result = chaos("run", *LIVE_429, "--", sys.executable, BOT, bot_config(exchange), "2", env=env)

    assert stdout_json(result)["fetch_order_book"] == ["DDoSProtection"] * 2
    # once in chaos-shims itself (PYTHONPATH is its own too), once in the bot under chaos
    assert marker.read_text().splitlines() == ["-", "1"]
    probe = stdout_json(chaos("run", "--", sys.executable, PROBE, env=env))
    assert probe["sitecustomize"] == str(user_site / "sitecustomize.py")
    assert probe["active"] is True
    assert probe["pythonpath"] == [BOOTSTRAP_FOLDER, str(user_site)]


@pytest.mark.parametrize("error", ["raise RuntimeError('boom')", "import no_such_module_xyz"],
                         ids=["raises", "bad-import"])
def test_run_a_failing_user_sitecustomize_is_reported_as_site_does(
        tmp_path: Path, error: str) -> None:
    # It fails only where chaos is on, so chaos-shims's own interpreter starts cleanly.
    body = f"import os\nif os.environ.get('CHAOS_SHIMS_ENABLED'):\n    {error}\n"
    env = clean_env(PYTHONPATH=str(write_user_site(tmp_path / "site", body)))
    plain = run([sys.executable, "-c", "pass"], env, CHAOS_SHIMS_ENABLED="0")
    expected = plain.stderr.strip()
    assert expected.startswith("Error in sitecustomize; set PYTHONVERBOSE for traceback:")

    result = chaos("run", "--", sys.executable, PROBE, env=env)

    assert expected in result.stderr
    assert stdout_json(result)["active"] is True


def test_run_child_processes_inherit_chaos(exchange: LoopbackExchange) -> None:
    spawn = ("import subprocess, sys; "
             "sys.exit(subprocess.call([sys.executable] + sys.argv[1:]))")

    result = chaos("run", *LIVE_429, "--", sys.executable, "-c", spawn,
                   BOT, bot_config(exchange), "2")

    assert stdout_json(result)["fetch_order_book"] == ["DDoSProtection"] * 2
    assert exchange.request_count(DEPTH) == 0


def test_run_nested_does_not_stack_the_bootstrap_and_shares_the_seed() -> None:
    result = chaos("run", "--set", "exch_429=0.1", "--", CLI, "run", "--", sys.executable, PROBE)

    probe = stdout_json(result)
    assert probe["pythonpath"] == [BOOTSTRAP_FOLDER]
    assert probe["active"] is True
    assert result.stderr.count("(random); rerun") == 1
    assert f"--set seed={probe['seed']}" in result.stderr


def test_run_replaces_itself_with_the_command() -> None:
    process = subprocess.Popen([CLI, "run", "--", sys.executable, PROBE], env=clean_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, _ = process.communicate(timeout=60)
    assert json.loads(out)["pid"] == process.pid


@pytest.mark.parametrize(("code", "expected"), [
    ("raise SystemExit(7)", 7),
    ("import os, signal; os.kill(os.getpid(), signal.SIGTERM)", -signal.SIGTERM),
])
def test_run_returns_the_commands_exit_status(code: str, expected: int) -> None:
    assert chaos("run", "--", sys.executable, "-c", code).returncode == expected


def test_run_command_not_found_is_127() -> None:
    result = chaos("run", "--", "no-such-command-chaos-shims")
    assert result.returncode == 127
    assert "command not found: no-such-command-chaos-shims" in result.stderr


@pytest.mark.parametrize("args", [[], ["--"], ["--set", "exch_429=1"]])
def test_run_without_a_command_is_a_usage_error(args: list[str]) -> None:
    result = chaos("run", *args)
    assert result.returncode == 2
    assert "COMMAND" in result.stderr


def test_run_clamps_out_of_range_values_with_one_warning() -> None:
    result = chaos("run", "--set", "exch_429=2", "--", sys.executable, PROBE)

    assert stdout_json(result)["values"]["exch_429"] == 1.0
    warnings = [line for line in result.stderr.splitlines() if "clamped" in line]
    assert len(warnings) == 1
    assert "exch_429" in warnings[0]


@pytest.mark.parametrize(("args", "env", "named"), [
    (["--set", "exch_429=abc"], {}, "exch_429"),
    (["--set", "nope=1"], {}, "nope"),
    (["--set", "exch_429"], {}, "exch_429"),
    ([], {"CHAOS_SHIMS_EXCH_492": "1"}, "CHAOS_SHIMS_EXCH_492"),
    ([], {"CHAOS_SHIMS_CONFIG": "/nonexistent/chaos.yaml"}, "CHAOS_SHIMS_CONFIG"),
], ids=["bad-value", "unknown-key", "no-equals", "env-typo", "missing-yaml"])
def test_run_bad_config_exits_2_before_the_command_runs(
        tmp_path: Path, args: list[str], env: dict[str, str], named: str) -> None:
    marker = tmp_path / "ran"
    command = [sys.executable, "-c", f"open({str(marker)!r}, 'w')"]

    result = chaos("run", *args, "--", *command, env=clean_env(**env))

    assert result.returncode == 2
    assert result.stderr.startswith("chaos-shims: ")
    assert named in result.stderr
    assert not marker.exists()


# -- cost when nothing is enabled --------------------------------------------------------------

LOADED = ("import sys, json, chaos_shims.auto; "
          f"print(json.dumps([m for m in {HEAVY!r} + ('chaos_shims.activation',) "
          "if m in sys.modules]))")


@pytest.mark.parametrize("pythonpath", ["", BOOTSTRAP_FOLDER], ids=["auto", "bootstrap"])
def test_inactive_import_loads_nothing_heavy(pythonpath: str) -> None:
    result = run([sys.executable, "-c", LOADED], clean_env(PYTHONPATH=pythonpath))
    assert stdout_json(result) == []


# -- config ------------------------------------------------------------------------------------

def test_config_shows_every_source(tmp_path: Path) -> None:
    config_file = tmp_path / "config.yaml"
    config_file.write_text("chaos:\n  exch_5xx: 0.1\n  lat_spike_ms: 100\n  burst_on_sec: 5\n")
    env = clean_env(CHAOS_SHIMS_CONFIG=str(config_file), CHAOS_SHIMS_LAT_SPIKE_MS="300",
                    CHAOS_SHIMS_EXCH_429="0.5")

    document = stdout_json(chaos("config", "--set", "exch_429=0.3", "--json", env=env))

    keys = document["keys"]
    assert keys["enabled"] == {"value": False, "source": "default"}
    assert keys["exch_5xx"] == {"value": 0.1, "source": f"yaml:{config_file}"}
    assert keys["burst_on_sec"] == {"value": 5.0, "source": f"yaml:{config_file}"}
    assert keys["lat_spike_ms"] == {"value": 300.0, "source": "CHAOS_SHIMS_LAT_SPIKE_MS"}
    assert keys["exch_429"] == {"value": 0.3, "source": "--set"}
    assert keys["seed"]["source"] == "random"
    assert set(keys) >= {*CATALOG.keys(), "dry_run", "include_ops"}
    assert document["process_settings"]["CHAOS_SHIMS_CONFIG"] == str(config_file)

    text = chaos("config", "--set", "exch_429=0.3", env=env)
    assert text.returncode == 0
    rows = {line.split()[0]: line.split()[1:] for line in text.stdout.splitlines()
            if line.strip()}
    assert rows["exch_429"] == ["0.3", "--set"]
    assert rows["lat_spike_ms"] == ["300", "CHAOS_SHIMS_LAT_SPIKE_MS"]
    assert rows["exch_5xx"] == ["0.1", f"yaml:{config_file}"]
    assert rows["enabled"] == ["false", "default"]


@pytest.mark.parametrize(("yaml_text", "named"), [
    ("chaos: [unclosed\n", "CHAOS_SHIMS_CONFIG"),
    ("exch_429: 0.1\n", "CHAOS_SHIMS_CONFIG"),
    ("chaos:\n  exch_429: lots\n", "exch_429"),
    ("chaos:\n  exch_492: 0.1\n", "exch_492"),
], ids=["invalid-yaml", "no-chaos-section", "bad-value", "unknown-key"])
def test_config_bad_yaml_exits_2(tmp_path: Path, yaml_text: str, named: str) -> None:
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml_text)

    result = chaos("config", CHAOS_SHIMS_CONFIG=str(config_file))

    assert result.returncode == 2
    assert result.stderr.startswith("chaos-shims: ")
    assert named in result.stderr
    assert result.stdout == ""


def test_config_env_typo_exits_2_with_a_suggestion() -> None:
    result = chaos("config", CHAOS_SHIMS_EXCH_492="1")
    assert result.returncode == 2
    assert "CHAOS_SHIMS_EXCH_492" in result.stderr
    assert "did you mean CHAOS_SHIMS_EXCH_429" in result.stderr


# -- in-process: scenarios, help, version, helpers ------------------------------------------

def test_scenarios_lists_every_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scenarios"]) == 0
    out = capsys.readouterr().out
    listed = {line.split()[0] for line in out.splitlines()[1:] if line[:1].strip()}
    expected = {"net_loss", "exch_429", "exch_5xx", "lat_spike_ms", "rate_limit_storm"}
    assert expected <= set(CATALOG.keys())
    assert set(CATALOG.keys()) <= listed
    assert "parameters: net_loss_timeout_ms" in out


def test_scenarios_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scenarios", "--json"]) == 0
    table = json.loads(capsys.readouterr().out)
    assert [entry["key"] for entry in table] == CATALOG.keys()
    storm = next(entry for entry in table if entry["key"] == "rate_limit_storm")
    assert storm["parameters"][0]["key"] == "rate_limit_storm_sec"
    assert all(entry["summary"] and entry["kind"] for entry in table)


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    err = capsys.readouterr().err
    assert "run" in err and "config" in err and "scenarios" in err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from chaos_shims import __version__

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"chaos-shims {__version__}"
    assert chaos("--version").stdout.strip() == f"chaos-shims {__version__}"


def test_parse_assignments() -> None:
    assert parse_assignments(["EXCH_429=0.1", "seed=1", "exch_429=0.2", "include_ops=a,b"]) == {
        "exch_429": "0.2", "seed": "1", "include_ops": "a,b"}


def test_bootstrap_pythonpath_goes_first_once() -> None:
    sep = os.pathsep
    assert bootstrap_pythonpath(None) == BOOTSTRAP_FOLDER
    assert bootstrap_pythonpath("/a") == f"{BOOTSTRAP_FOLDER}{sep}/a"
    nested = bootstrap_pythonpath(f"/a{sep}{BOOTSTRAP_FOLDER}{sep}/b")
    assert nested == f"{BOOTSTRAP_FOLDER}{sep}/a{sep}/b"
    assert bootstrap_pythonpath(nested) == nested


def test_report_and_findings_are_subcommands(tmp_path: Path) -> None:
    from chaos_shims.cli import main
    from tests.test_report import craft, cycles

    runs = tmp_path / "runs"
    runs.mkdir()
    craft(runs, "baseline", cycles())
    craft(runs, "storm", cycles(bad_on=3), scenarios={"exch_429": 0.2})
    (runs / "junk.json").write_text("{not json")
    report = tmp_path / "report.md"
    assert main(["report", "--runs", str(runs), "--output", str(report)]) == 0
    text = report.read_text()
    assert "junk.json" in text and "exch_429" in text
    findings = tmp_path / "findings.json"
    assert main(["findings", "--report", str(report), "--output", str(findings)]) == 0
    assert isinstance(json.loads(findings.read_text()), list)
    assert main(["findings", "--report", str(tmp_path / "missing.md")]) == 2


def test_bad_exporter_settings_exit_2_before_the_command_runs(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from chaos_shims.cli import main

    monkeypatch.setenv("CHAOS_SHIMS_METRICS_PORT", "not-a-port")
    marker = tmp_path / "ran"
    assert main(["config"]) == 2
    assert main(["run", "--", sys.executable, "-c", f"open({str(marker)!r}, 'w')"]) == 2
    assert not marker.exists()
