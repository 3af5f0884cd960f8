"""Configuration: precedence, sources, clamping, and every bad-input path."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from chaos_shims.activation import resolve
from chaos_shims.core.errors import ChaosConfigError


def test_defaults_are_safe() -> None:
    config = resolve(environ={})
    assert config.enabled is False
    assert config.dry_run is True
    assert config["burst_on_sec"] == 30 and config["burst_off_sec"] == 90
    assert config.active_scenarios() == []
    assert config.sources["enabled"] == "default"
    assert config.sources["seed"] == "random"
    assert isinstance(config.seed, int)


def test_precedence_defaults_yaml_env_explicit(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("app: {name: bot}\nchaos:\n  exch_429: 0.1\n  exch_5xx: 0.2\n  lat_spike_ms: 50\n")
    environ = {"CHAOS_SHIMS_CONFIG": str(path), "CHAOS_SHIMS_EXCH_5XX": "0.3",
               "CHAOS_SHIMS_LAT_SPIKE_MS": "70"}
    config = resolve({"lat_spike_ms": 90}, environ=environ)
    assert config["exch_429"] == 0.1
    assert config.sources["exch_429"] == f"yaml:{path}"
    assert config["exch_5xx"] == 0.3
    assert config.sources["exch_5xx"] == "CHAOS_SHIMS_EXCH_5XX"
    assert config["lat_spike_ms"] == 90
    assert config.sources["lat_spike_ms"] == "explicit"
    assert config["net_loss"] == 0.0 and config.sources["net_loss"] == "default"


def test_later_explicit_layers_win() -> None:
    config = resolve({"exch_429": 0.5}, layers=[("cli", {"exch_429": 0.1, "exch_5xx": 0.2})],
                     environ={})
    assert config["exch_429"] == 0.5 and config.sources["exch_429"] == "explicit"
    assert config["exch_5xx"] == 0.2 and config.sources["exch_5xx"] == "cli"


@pytest.mark.parametrize(("raw", "expected"), [
    ("1", True), ("0", False), ("true", True), ("FALSE", False), ("yes", True), ("no", False),
    ("on", True), ("off", False), (True, True), (0, False),
])
def test_booleans(raw: object, expected: bool) -> None:
    assert resolve({"enabled": raw}, environ={}).enabled is expected


def test_seed_from_env_is_used() -> None:
    config = resolve(environ={"CHAOS_SHIMS_SEED": "7"})
    assert config.seed == 7 and config.sources["seed"] == "CHAOS_SHIMS_SEED"


def test_names_are_normalised() -> None:
    config = resolve({"include_ops": "fetchOrderBook, create_order", "include_exchanges": ["Binance"]},
                     environ={})
    assert config["include_ops"] == frozenset({"fetch_order_book", "create_order"})
    assert config["include_exchanges"] == frozenset({"binance"})


@pytest.mark.parametrize(("key", "raw", "clamped"), [
    ("exch_429", 1.5, 1.0), ("exch_5xx", "-0.2", 0.0), ("lat_spike_ms", -5, 0.0),
    ("burst_off_sec", "-1", 0.0),
])
def test_out_of_range_is_clamped_with_one_warning(
    key: str, raw: object, clamped: float, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="chaos_shims"):
        config = resolve({key: raw}, environ={})
    assert config[key] == clamped
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert key in message and str(clamped).rstrip("0").rstrip(".") in message


@pytest.mark.parametrize(("layer", "key", "raw", "allowed"), [
    ({"exch_429": "often"}, "exch_429", "often", "probability"),
    ({"exch_429": True}, "exch_429", "True", "probability"),
    ({"exch_429": float("nan")}, "exch_429", "nan", "probability"),
    ({"enabled": "maybe"}, "enabled", "maybe", "boolean"),
    ({"seed": -1}, "seed", "-1", "non-negative integer"),
    ({"seed": "abc"}, "seed", "abc", "non-negative integer"),
    ({"include_ops": "fetch order book"}, "include_ops", "fetch order book", "names"),
    ({"include_exchanges": 5}, "include_exchanges", "5", "names"),
    ({"exch_249": 0.1}, "exch_249", "0.1", "did you mean exch_429"),
])
def test_bad_values_name_key_value_and_allowed(layer: dict[str, object], key: str, raw: str,
                                               allowed: str) -> None:
    with pytest.raises(ChaosConfigError) as info:
        resolve(layer, environ={})
    message = str(info.value)
    assert info.value.key == key
    assert key in message and raw in message and allowed in message


def test_env_typo_is_reported_with_suggestion() -> None:
    with pytest.raises(ChaosConfigError) as info:
        resolve(environ={"CHAOS_SHIMS_EXCH_492": "0.2"})
    assert info.value.key == "CHAOS_SHIMS_EXCH_492"
    assert "did you mean CHAOS_SHIMS_EXCH_429" in str(info.value)


def test_env_process_settings_are_not_config_keys() -> None:
    config = resolve(environ={"CHAOS_SHIMS_LOG_FILE": "x.jsonl", "CHAOS_SHIMS_METRICS_PREFIX": "bot",
                              "CHAOS_SHIMS_BOOTSTRAP_DIR": "/x"})
    assert "log_file" not in config.values


@pytest.mark.parametrize(("text", "needle"), [
    ("chaos: [1, 2]", "mapping of config keys"),
    ("other: {}", "top-level `chaos:` key"),
    ("chaos: {exch_429: : :}", "valid YAML"),
    ("chaos: {exch_429: lots}", "probability"),
    ("chaos: {bogus: 1}", "known keys"),
])
def test_bad_yaml(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "chaos.yaml"
    path.write_text(text)
    with pytest.raises(ChaosConfigError) as info:
        resolve(environ={"CHAOS_SHIMS_CONFIG": str(path)})
    assert needle in str(info.value)


def test_missing_yaml_file_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ChaosConfigError) as info:
        resolve(environ={"CHAOS_SHIMS_CONFIG": str(tmp_path / "missing.yaml")})
    assert info.value.key == "CHAOS_SHIMS_CONFIG"
    assert "missing.yaml" in str(info.value)


def test_empty_chaos_section_is_defaults(tmp_path: Path) -> None:
    path = tmp_path / "chaos.yaml"
    path.write_text("chaos:\n")
    assert resolve(environ={"CHAOS_SHIMS_CONFIG": str(path)}).enabled is False
