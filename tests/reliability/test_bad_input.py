"""Bad input, property-based: whatever a user writes in the environment, a YAML file or a pytest
marker, configuration ends in a valid config or a ``ChaosConfigError`` that names the key and the
value, never in any other exception; whatever lies in a runs folder or a report file,
``chaos-shims report`` and ``chaos-shims findings`` name and skip what they cannot use and end
with their defined exit code (0 written, 2 nothing usable), never with a traceback.

"Valid" is checked, not assumed: every value inside its kind's range, a value read back parses
to itself, the run artifact can write the config down, an injector can be armed with it, each
key came from the source that set it, and a number out of range was clamped with exactly one
warning. Strategies lean towards values close to valid ones, so valid configs and clamps come
up as often as errors (``--hypothesis-show-statistics`` counts them).

The bugs this suite found each have a regression test: port digits int() does not read beside
the exporter's property test; numbers no float holds, histogram parameters that overflow, counts
that sized an allocation and JSON nested past the recursion limit at the end of this module.
The property tests draw the inputs that hit them like any other.

Reproducible: every test derandomizes hypothesis (the same examples on every machine and run)
and keeps no example database.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import re
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context
from prometheus_client import CollectorRegistry

from chaos_shims import exporter, findings, report, run, signals, ticks
from chaos_shims.activation import activate, deactivate, resolve
from chaos_shims.core import env
from chaos_shims.core.config import ChaosConfig, key_table
from chaos_shims.core.errors import ChaosConfigError
from chaos_shims.core.injector import ChaosInjector
from chaos_shims.core.values import Boolean, NameSet, Number, Seed, Text, _number
from chaos_shims.pytest_plugin import MARKER_SOURCE, ChaosOptions, _marker_layer
from chaos_shims.scenarios import CATALOG

pytestmark = [pytest.mark.timeout(120), pytest.mark.filterwarnings("error::ResourceWarning")]


def reproducible(max_examples: int) -> settings:
    """The same examples on every machine and run, no example database, and a deadline far
    above an example's cost (a few ms) so a loaded CI machine cannot turn slowness into a
    failure."""
    return settings(derandomize=True, database=None, deadline=2000, max_examples=max_examples,
                    suppress_health_check=[HealthCheck.too_slow])


TABLE = key_table(CATALOG)
KEYS = sorted(TABLE)
ENV_NAMES = [env.env_name(key) for key in KEYS]


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where examples write their files (module-scoped: hypothesis runs many examples in one
    test, and a function-scoped tmp_path would be shared by them anyway)."""
    return tmp_path_factory.mktemp("bad-input")


@contextlib.contextmanager
def scratch_folder(parent: Path) -> Iterator[Path]:
    """A fresh folder for one example, removed after it."""
    with tempfile.TemporaryDirectory(dir=parent) as name:
        yield Path(name)


# == configuration ============================================================================

# -- what a user might write -------------------------------------------------------------------

def _typos(word: str) -> st.SearchStrategy[str]:
    """``word`` with one slip of the finger: a character lost, doubled, swapped or replaced."""
    positions = st.integers(0, max(0, len(word) - 1))
    return st.one_of(
        positions.map(lambda i: word[:i] + word[i + 1:]),
        positions.map(lambda i: word[:i] + word[i] + word[i:]),
        positions.map(lambda i: word[:i] + word[i + 1:i + 2] + word[i:i + 1] + word[i + 2:]),
        st.tuples(positions, st.characters(codec="ascii")).map(
            lambda p: word[:p[0]] + p[1] + word[p[0] + 1:]),
        st.just(word.swapcase()),
    )


#: Text values that sit on the edges of every value kind.
EDGE_TEXTS = [
    "", " ", "0", "1", "-1", "-0", "0.5", "1.5", " 0.25 ", "nan", "NaN", "-nan", "inf", "-inf",
    "Infinity", "1e999", "-1e999", "1e-999", "1e308", "1.8e308", "0x10", "0o17", "1_000", "1,5",
    "²", "٣", "\uff11\uff12", "⅕", "true", "False", "YES", "off", "maybe", "random", "none", "low", "HIGH",
    "512MiB", "1.5GiB", "0B", "-1MiB", "9" * 400, "9" * 400 + "KiB", "9" * 5000, "1" + "0" * 4400,
    "binance,kraken", "fetchOrderBook, create_order", "fetch order book", ",,,", "a\nb",
    "x" * 1025, "\x00", "\udcff", "😀", "ÄÖÜ", "ß",
]

numeric_texts = st.one_of(
    st.integers(min_value=-(10 ** 400), max_value=10 ** 400).map(str),
    st.floats().map(repr),
    st.floats(allow_nan=False, allow_infinity=False).map(lambda x: f"{x:.3e}"),
)
#: Environment values: any text a process can hold (surrogates stand for bytes that were not
#: UTF-8), numbers written every way, and the edge cases above.
env_values = st.one_of(st.sampled_from(EDGE_TEXTS), numeric_texts, st.text(st.characters()))

env_names = st.one_of(
    st.sampled_from(ENV_NAMES),
    st.sampled_from(ENV_NAMES).flatmap(_typos),
    st.sampled_from([name for name in env.PROCESS_SETTINGS if name != env.CONFIG_FILE]),
    st.text(st.characters(), max_size=12).map(lambda tail: env.PREFIX + tail),
    st.text(max_size=12),  # not ours: ignored
)

#: Python values a marker or a YAML file could give (YAML adds dates, bytes and sets).
scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(), st.integers(min_value=-(10 ** 5000), max_value=10 ** 5000),
    st.floats(), st.text(st.characters()), st.sampled_from(EDGE_TEXTS),
)


class BrokenRepr:
    """A value whose repr raises: an error message must still be made."""

    def __repr__(self) -> str:
        raise RuntimeError("no repr for you")

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text("BrokenRepr()")  # how hypothesis prints it in a failure report


python_values = st.recursive(
    st.one_of(scalars, st.binary(max_size=8), st.complex_numbers(), st.decimals(),
              st.fractions(), st.dates(), st.just(object()), st.just(BrokenRepr())),
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.tuples(children, children),
        st.frozensets(st.one_of(st.text(max_size=6), st.integers()), max_size=4),
        st.dictionaries(st.text(max_size=6), children, max_size=3)),
    max_leaves=8,
)

#: Values close to what a user means to write, so that valid configs (and clamps) come up as
#: often as errors: numbers in and around every range, words of every kind.
NEAR_VALID: list[Any] = [
    False, True, None, 0, 1, 7, -3, 250, 0.0, 0.25, 1.0, 1.5, -0.5, 1e6, "0", "1", "yes", "off",
    "0.25", "1.5", "-2", "300", "random", "low", "none", "64MiB", "binance", "binance,kraken",
    "fetchTicker, create_order", ["kraken", "okx"], "bot-1",
]
near_valid = st.one_of(st.sampled_from(NEAR_VALID), st.floats(-10, 1000), st.integers(-10, 10_000))


def _settings_from(pairs: st.SearchStrategy[tuple[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    return st.lists(pairs, max_size=5).map(dict)


marker_keys = st.one_of(
    st.sampled_from(KEYS), st.sampled_from(KEYS).flatmap(_typos),
    st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,15}", fullmatch=True),
)


# -- what must hold of the outcome ---------------------------------------------------------------

@dataclass
class Outcome:
    config: ChaosConfig | None
    error: ChaosConfigError | None
    warnings: list[str]


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _event(name: str) -> None:
    """Counted in ``--hypothesis-show-statistics`` (how often each outcome came up)."""
    if currently_in_test_context():
        event(name)


def resolve_outcome(call: Callable[[], ChaosConfig]) -> Outcome:
    """Run one resolution. Any exception but ChaosConfigError escapes and fails the example."""
    logger = logging.getLogger("chaos_shims")
    handler = _Collect()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    try:
        config = call()
    except ChaosConfigError as exc:
        _event("ChaosConfigError")
        return Outcome(None, exc, handler.messages)
    else:
        _event("valid, a value clamped" if handler.messages else "valid")
        return Outcome(config, None, handler.messages)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _short_scalar(value: Any) -> bool:
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 10_000:
        return False
    return isinstance(value, (str, int, float, type(None))) and len(repr(value)) <= 300


def check_error(error: ChaosConfigError, given: Mapping[str, Any],
                name_of: Callable[[str], str] = lambda key: key) -> None:
    """The error names what the user wrote (``given``: name as written -> value) and the value
    given for it. ``name_of`` maps a config key to the name it was written under."""
    message = str(error)
    name = error.key if error.key in given else name_of(error.key)
    assert name in given, (error.key, list(given))
    assert name in message, (name, message)
    value = given[name]
    if _short_scalar(value):
        assert repr(value) in message, (value, message)
    else:  # shown, but briefly: a message never grows with the value's nesting
        assert len(message) < 4000 + (len(value) if isinstance(value, str) else 0), message


def check_valid(config: ChaosConfig) -> None:
    """Every value within its kind's range; a value read back parses to itself; the run artifact
    can record the config; an injector can be armed with it."""
    for name, spec in TABLE.items():
        value, kind = config[name], spec.kind
        if isinstance(kind, Boolean):
            assert type(value) is bool, (name, value)
        elif isinstance(kind, Number):
            assert isinstance(value, (int, float)) and not isinstance(value, bool), (name, value)
            assert math.isfinite(value), (name, value)
            assert kind.minimum is None or value >= kind.minimum, (name, value)
            assert kind.maximum is None or value <= kind.maximum, (name, value)
            assert not kind.integer or isinstance(value, int), (name, value)
        elif isinstance(kind, Seed):
            assert isinstance(value, int) and not isinstance(value, bool) and value >= 0
        elif isinstance(kind, Text):
            assert value is None or (isinstance(value, str) and 0 < len(value) <= 1024
                                     and "\n" not in value and "\x00" not in value), (name, value)
        elif isinstance(kind, NameSet):
            assert isinstance(value, frozenset), (name, value)
            for item in value:
                assert isinstance(item, str) and re.fullmatch(r"[A-Za-z0-9_.\-]+", item), item
                assert kind.normalise(item) == item, (name, item)
        assert kind.parse(name, value, "check") == value, (name, value)
    json.dumps(config.as_dict(), allow_nan=False, default=str)
    ChaosInjector(config, export_metrics=False).close()


def check_sources(config: ChaosConfig, given: Mapping[str, Any], source: str) -> None:
    """Each key given was taken from this source (a seed left unset is drawn at random)."""
    for key, raw in given.items():
        unset_seed = key == "seed" and Seed().parse(key, raw) is None
        assert config.sources[key] == ("random" if unset_seed else source), (key, raw)


def check_clamps(outcome: Outcome, given: Mapping[str, Any]) -> None:
    """Each number given out of range was clamped with exactly one warning naming it."""
    assert outcome.config is not None
    for key, raw in given.items():
        kind = TABLE[key].kind
        if not isinstance(kind, Number):
            continue
        number = _number(raw)
        clamped = number is not None and outcome.config[key] != number
        named = [m for m in outcome.warnings if m.startswith(f"chaos config {key}=")]
        assert len(named) == (1 if clamped else 0), (key, raw, outcome.warnings)


# -- environment ---------------------------------------------------------------------------------

@reproducible(300)
@given(_settings_from(st.one_of(st.tuples(st.sampled_from(ENV_NAMES), near_valid.map(str)),
                                st.tuples(env_names, env_values))))
@example({"CHAOS_SHIMS_SEED": "²"})  # a digit int() does not read
@example({"CHAOS_SHIMS_SEED": "9" * 5000})  # more digits than int() reads
@example({"CHAOS_SHIMS_INSTANCE_ID": "1" + "0" * 4400})
@example({"CHAOS_SHIMS_MEM_PRESSURE": "9" * 400 + "KiB"})  # a size beyond any float
@example({"CHAOS_SHIMS_EXCH_492": "0.2"})
# Two spellings of one key: which won depended on the environment's order.
@example({"CHAOS_SHIMS_EXCH_429": "0.1", "CHAOS_SHIMS_exch_429": "0.9"})
def test_environment_gives_a_valid_config_or_names_the_variable(environ: dict[str, str]) -> None:
    outcome = resolve_outcome(lambda: resolve(environ=environ))
    # What the resolver reads: each known key once, the last spelling of it winning.
    given: dict[str, Any] = {}
    for name, value in environ.items():
        if name.startswith(env.PREFIX) and name not in env.PROCESS_SETTINGS:
            given[name] = value
    if outcome.error is not None:
        check_error(outcome.error, given, env.env_name)
        return
    assert outcome.config is not None
    by_key = {env.key_of(name): value for name, value in given.items()}
    assert set(by_key) <= set(TABLE)
    check_valid(outcome.config)
    for key, raw in by_key.items():
        check_sources(outcome.config, {key: raw}, env.env_name(key))
    check_clamps(outcome, by_key)


EXPORTER_NAMES = [env.METRICS_PORT, env.METRICS_ADDR, env.METRICS_PREFIX,
                  exporter.MULTIPROC_DIR]
PORT_NEAR_VALID = ["0", "1", "9100", "65535", "65536", " 8000 ", "-1", "80.0", "0x50"]


@reproducible(200)
@given(st.dictionaries(st.sampled_from(EXPORTER_NAMES),
                       st.one_of(st.sampled_from(PORT_NEAR_VALID), env_values,
                                 st.sampled_from(["127.0.0.1", "::1", "[::1]", "localhost",
                                                  "0.0.0.0", "bot.example", "1.2.3.4:9100",
                                                  "mm", "bot_metrics", "9x"]))))
def test_exporter_settings_from_the_environment_are_valid_or_name_the_variable(
        environ: dict[str, str]) -> None:
    """The exporter's variables, read at activation with the config (a bad one is a config
    error like any other)."""
    try:
        settings_ = exporter.exporter_settings(environ)
    except ChaosConfigError as exc:
        check_error(exc, environ)
        return
    assert settings_.port is None or 0 <= settings_.port <= 65535
    assert re.fullmatch(r"[a-zA-Z_:][a-zA-Z0-9_:]*", settings_.prefix)
    assert settings_.addr and "\x00" not in settings_.addr


@pytest.mark.parametrize("port", ["\u00b2", "9" * 5000, "0" * 5000 + "80"],
                         ids=["superscript-two", "5000-nines", "5002-digits"])
def test_a_port_of_digits_int_cannot_read_is_a_config_error(port: str) -> None:
    """str.isdigit() accepted "²" and digits past int()'s 4300, and int() raised ValueError."""
    environ = {env.METRICS_PORT: port}
    with pytest.raises(ChaosConfigError) as raised:
        exporter.exporter_settings(environ)
    check_error(raised.value, environ)


# -- YAML ------------------------------------------------------------------------------------------

yaml_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(),
    st.integers(min_value=-(10 ** 1000), max_value=10 ** 1000),  # beyond floats, within repr
    st.floats(), st.text(max_size=30), st.binary(max_size=8), st.dates(),
    st.sampled_from([text for text in EDGE_TEXTS if "\udcff" not in text]),
)
yaml_values = st.recursive(
    yaml_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=8), st.integers()), children, max_size=3)),
    max_leaves=8,
)
chaos_sections = _settings_from(st.one_of(
    st.tuples(st.sampled_from(KEYS), near_valid),
    st.tuples(st.sampled_from(KEYS), near_valid),
    st.tuples(st.one_of(st.sampled_from(KEYS), st.sampled_from(KEYS).flatmap(_typos),
                        st.text(max_size=10), st.integers(), st.none(), st.booleans(),
                        st.floats()),
              yaml_values)))
yaml_documents = st.one_of(
    chaos_sections.map(lambda section: {"chaos": section}),
    st.tuples(chaos_sections, st.dictionaries(st.text(max_size=8), yaml_values, max_size=2)).map(
        lambda pair: {**pair[1], "chaos": pair[0]}),  # an application's config.yaml
    yaml_values.map(lambda value: {"chaos": value}),  # a chaos section that is no mapping
    yaml_values,  # any root: a list, a scalar, a mapping without chaos
)


def _dump(document: Any) -> str:
    return yaml.safe_dump(document, allow_unicode=True, sort_keys=False)


#: YAML that PyYAML itself reads into something surprising, or fails on in surprising ways.
RAW_YAML = [
    "chaos: {seed: 2001-02-30}",  # a date that does not exist: ValueError inside the loader
    "chaos: {seed: " + "9" * 5000 + "}",  # more digits than int() reads
    "chaos: {exch_429: " + "9" * 400 + "}",  # an int beyond any float
    "chaos: " + "[" * 600 + "]" * 600,  # nesting deeper than the loader's recursion allows
    "[" * 600 + "]" * 600,
    "chaos: {? [a, b] : 1}",  # an unhashable key
    "chaos: !!python/object:os.system {}",  # a tag safe_load refuses
    "chaos: {exch_429: !!binary aGVsbG8=}",
    "chaos: {include_ops: !!set {fetchTicker, b}}",
    "chaos: {seed: 0x1F, exch_429: 0o1}",
    "chaos: {seed: 190:20:30}",  # a YAML 1.1 sexagesimal integer
    "--- a\n--- b",  # two documents
    "chaos:\n\texch_429: 0.1",  # a tab
    "chaos: &loop [*loop]",  # an alias to itself
    # Each level refers to the one before ten times: 10**9 elements if anyone expands it.
    "a: &a [1,1,1,1,1,1,1,1,1,1]\n" + "".join(
        f"{n}: &{n} [{', '.join(['*' + p] * 10)}]\n"
        for p, n in zip("abcdefgh", "bcdefghi", strict=True)) + "chaos: *i",
    "a: &a [1,1,1,1,1,1,1,1,1,1]\n" + "".join(
        f"{n}: &{n} [{', '.join(['*' + p] * 10)}]\n"
        for p, n in zip("abcdefgh", "bcdefghi", strict=True)) + "chaos: {exch_429: *i}",
]

yaml_files = st.one_of(
    yaml_documents.map(_dump).map(lambda text: text.encode("utf-8")),
    st.tuples(yaml_documents.map(_dump), st.integers(0, 200), st.text(max_size=3)).map(
        lambda t: (t[0][:t[1]] + t[2] + t[0][t[1] + 1:]).encode("utf-8")),  # one slip
    st.sampled_from(RAW_YAML).map(lambda text: text.encode("utf-8")),
    st.text(max_size=60).map(lambda text: ("chaos:\n  " + text).encode("utf-8")),
    st.binary(max_size=64),  # not even text
    st.binary(max_size=16).map(lambda junk: b"chaos:\n  exch_429: " + junk),
)


def _what_the_file_says(data: bytes, path: str) -> dict[str, Any]:
    """The names a config error may name for this file, with the value written for each."""
    given: dict[str, Any] = {env.CONFIG_FILE: path}
    try:
        document = yaml.safe_load(data.decode("utf-8"))
    except Exception:
        return given
    if isinstance(document, dict) and "chaos" in document:
        section = document["chaos"]
        given["chaos"] = section
        if isinstance(section, dict):
            given.update({str(key): value for key, value in section.items()})
    return given


@reproducible(250)
@given(data=yaml_files)
def test_yaml_gives_a_valid_config_or_names_the_key(scratch: Path, data: bytes) -> None:
    with scratch_folder(scratch) as folder:
        path = folder / "config.yaml"
        path.write_bytes(data)
        outcome = resolve_outcome(lambda: resolve(environ={env.CONFIG_FILE: str(path)}))
        given = _what_the_file_says(data, str(path))
    if outcome.error is not None:
        check_error(outcome.error, given)
        return
    assert outcome.config is not None
    check_valid(outcome.config)
    section = {key: value for key, value in given.items() if key in TABLE}
    check_sources(outcome.config, section, f"yaml:{path}")
    check_clamps(outcome, section)


@pytest.mark.parametrize("text", RAW_YAML, ids=lambda text: repr(text[:24]))
def test_yaml_that_trips_the_loader_is_a_config_error_or_valid(scratch: Path, text: str) -> None:
    """Every one of RAW_YAML, not only those the property test happens to draw, promptly."""
    with scratch_folder(scratch) as folder:
        path = folder / "config.yaml"
        path.write_text(text)
        started = time.monotonic()
        outcome = resolve_outcome(lambda: resolve(environ={env.CONFIG_FILE: str(path)}))
        assert time.monotonic() - started < 10  # an alias bomb is never expanded
        given = _what_the_file_says(text.encode(), str(path))
    if outcome.error is not None:
        check_error(outcome.error, given)
    else:
        assert outcome.config is not None
        check_valid(outcome.config)


@pytest.mark.parametrize("where", ["missing", "folder", "nul", "not-utf8"])
def test_a_config_file_that_cannot_be_read_names_the_variable(scratch: Path, where: str) -> None:
    with scratch_folder(scratch) as folder:
        path = {"missing": str(folder / "missing.yaml"), "folder": str(folder),
                "nul": f"{folder}/a\x00b.yaml", "not-utf8": str(folder / "latin1.yaml")}[where]
        (folder / "latin1.yaml").write_bytes("chaos: {instance_id: caf\xe9}".encode("latin-1"))
        outcome = resolve_outcome(lambda: resolve(environ={env.CONFIG_FILE: path}))
    assert outcome.error is not None
    check_error(outcome.error, {env.CONFIG_FILE: path})
    assert "a readable UTF-8 YAML file" in str(outcome.error)


# -- the pytest marker ---------------------------------------------------------------------------

def resolve_marker(kwargs: Mapping[str, Any]) -> ChaosConfig:
    """What the plugin does for ``@pytest.mark.chaos(**kwargs)``: the marker's layer
    (``_marker_layer``) over the test defaults, resolved (``ChaosSession._apply``)."""
    layers = [*ChaosOptions().layers({}), _marker_layer(pytest.mark.chaos(**kwargs).mark)]
    return resolve(layers=layers, environ={})


@reproducible(300)
@given(_settings_from(st.one_of(st.tuples(st.sampled_from(KEYS), near_valid),
                                st.tuples(st.sampled_from(KEYS), near_valid),
                                st.tuples(marker_keys, python_values))))
@example({"exch_429": 10 ** 400})  # an int no float holds
@example({"lat_spike_ms": 10 ** 5000})  # an int no repr prints
@example({"instance_id": 10 ** 5000})
@example({"seed": 10 ** 5000})  # a seed the run artifact could not write
@example({"mem_pressure": 10 ** 400})
@example({"include_ops": [BrokenRepr()]})
def test_marker_gives_a_valid_config_or_names_the_key(kwargs: dict[str, Any]) -> None:
    outcome = resolve_outcome(lambda: resolve_marker(kwargs))
    if outcome.error is not None:
        check_error(outcome.error, kwargs)
        assert f"(from {MARKER_SOURCE})" in str(outcome.error) or outcome.error.key not in TABLE
        return
    assert outcome.config is not None
    check_valid(outcome.config)
    check_sources(outcome.config, kwargs, MARKER_SOURCE)
    check_clamps(outcome, kwargs)


def test_a_marker_with_positional_arguments_fails_the_test_with_the_usage() -> None:
    with pytest.raises(pytest.fail.Exception, match=r"keyword arguments only"):
        _marker_layer(pytest.mark.chaos.with_args(0.5).mark)


# == run artifacts and reports ==================================================================

USAGE_ERROR = 2  # both tools: nothing usable, or the output could not be written


@dataclass(frozen=True)
class RealRuns:
    """A runs folder made by real in-process runs, and the report chaos-shims report made of it."""

    folder: Path
    baseline: str  # file names in folder/runs
    scenario: str
    report: str  # the Markdown text

    def artifact(self) -> dict[str, Any]:
        return dict(json.loads((self.folder / "runs" / self.scenario).read_text()))


def _one_run(folder: Path, **keys: Any) -> str:
    """One run with every part of an artifact filled in: bursts and recoveries, error ticks,
    cancels, deadline misses and the rollback they cause, injections, reconnects (counted from
    the metrics) and a reconciliation."""
    injector = activate(enabled=True, burst_on_sec=0.02, burst_off_sec=0.02, seed=5,
                        tick_deadline_ms=4, stop_window_ticks=6, stop_deadline_miss=0.3,
                        registry=CollectorRegistry(), **keys)
    assert injector is not None
    run.start_run(injector, directory=folder)
    for index in range(24):  # 2-3 ms ticks: a few 40 ms duty cycles
        with contextlib.suppress(RuntimeError), ticks.tick():
            time.sleep(0.006 if index % 3 == 2 else 0.002)  # every third misses the deadline
            if injector.should_fire("exch_429"):
                ticks.report_cancels(3)
                raise RuntimeError("rate limited")
    metrics = injector.metrics
    assert metrics is not None
    metrics.count_reconnect("websocket")
    if keys:
        signals.count(injector, signals.INJECTED, "order_dropped")
        signals.report_discrepancy("order_dropped")
    path = run.finish_run()
    assert path is not None
    return path.name


@pytest.fixture(scope="module")
def real_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealRuns]:
    folder = tmp_path_factory.mktemp("real-runs")
    run._reset_for_tests()
    ticks._reset_for_tests()
    try:
        baseline = _one_run(folder / "runs")
        scenario = _one_run(folder / "runs", exch_429=0.3, dry_run=False)
    finally:
        deactivate()
        run._reset_for_tests()
        ticks._reset_for_tests()
    code, _, err = report_main(folder, folder / "report.md")
    assert code == 0, err
    yield RealRuns(folder, baseline, scenario, (folder / "report.md").read_text())


def report_main(folder: Path, output: Path) -> tuple[int, str, str]:
    """``chaos-shims report --runs FOLDER --output OUTPUT`` in process: status, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = report.main(["--runs", str(folder), "--output", str(output)])
    return code, out.getvalue(), err.getvalue()


def findings_main(report_file: Path, output: Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = findings.main(["--report", str(report_file), "--output", str(output)])
    return code, out.getvalue(), err.getvalue()


def runs_with(real: RealRuns, folder: Path, extra: Mapping[str, bytes]) -> Path:
    """A runs folder: the two real artifacts and ``extra`` files (name -> content)."""
    runs = folder / "runs"
    runs.mkdir()
    for name in (real.baseline, real.scenario):
        (runs / name).write_bytes((real.folder / "runs" / name).read_bytes())
    for name, content in extra.items():
        (runs / name).write_bytes(content)
    return folder


def strict_json(text: str) -> Any:
    """``text`` read as JSON, failing on NaN and Infinity (which Python's reader accepts and
    other readers refuse): what chaos_shims writes must be JSON for every reader."""
    def refuse(name: str) -> Any:
        raise AssertionError(f"{name} in JSON written by chaos_shims")
    return json.loads(text, parse_constant=refuse)


def check_report_of(folder: Path, bad: list[str]) -> tuple[Path, dict[str, Any]]:
    """The report of ``folder`` is written (exit 0) and names every file in ``bad`` as skipped,
    on stderr and in the report, and the real runs are still in it; findings read it."""
    output = folder / "report.md"
    code, _, err = report_main(folder, output)
    assert code == 0, err
    assert "Traceback" not in err
    summary = findings.extract_summary(output.read_text())
    skipped = {Path(item["file"]).name: item["reason"] for item in summary["skipped"]}
    for name in bad:
        assert name in skipped, (name, skipped)
        assert skipped[name], name  # a reason, for a person
        assert f"skipped runs/{name}: {skipped[name]}" in err
    reported = {Path(r["file"]).name for row in summary["rows"] for r in row["runs"]}
    assert len(reported) >= 2
    code, _, err = findings_main(output, folder / "findings.json")
    assert code == 0, err
    strict_json((folder / "findings.json").read_text())
    return output, summary


def test_every_truncation_of_a_real_artifact_is_named_and_skipped(
        real_runs: RealRuns, scratch: Path) -> None:
    text = (real_runs.folder / "runs" / real_runs.scenario).read_text().rstrip("\n")
    cuts = {f"cut-{length:05d}.json": text[:length].encode() for length in range(len(text))}
    with scratch_folder(scratch) as folder:
        _, summary = check_report_of(runs_with(real_runs, folder, cuts), list(cuts))
    reasons = {item["reason"] for item in summary["skipped"]}
    assert all(reason.startswith("is not valid JSON") for reason in reasons), reasons


@reproducible(100)
@given(junk=st.binary(max_size=300))
def test_random_bytes_in_the_runs_folder_are_named_and_skipped(
        real_runs: RealRuns, scratch: Path, junk: bytes) -> None:
    with scratch_folder(scratch) as folder:
        check_report_of(runs_with(real_runs, folder, {"junk.json": junk}), ["junk.json"])


#: Numbers of every size and sign, and the non-finite ones JSON readers accept (NaN, Infinity).
json_numbers = st.one_of(
    st.integers(), st.floats(),
    st.sampled_from([0, -1, 2 ** 63, 10 ** 400, -(10 ** 400), 1e308, -1e308, 5e-324,
                     math.nan, math.inf, -math.inf]))
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), json_numbers, st.text(max_size=10)),
    lambda children: st.one_of(st.lists(children, max_size=3),
                               st.dictionaries(st.text(max_size=8), children, max_size=3)),
    max_leaves=6,
)

#: The parts of an artifact the report reads (the rest, config and command, it only shows).
READ_BY_THE_REPORT = ("schema", "run_id", "label", "mode", "ended_by", "baseline", "dry_run",
                      "active_scenarios", "ticks", "recovery", "cancels", "reconnects",
                      "injections", "reconcile", "rollbacks", "jsonl", "incomplete")


def _children(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return list(value)
    return list(range(len(value))) if isinstance(value, list) else []


@st.composite
def paths_into(draw: st.DrawFn, document: dict[str, Any]) -> tuple[Any, ...]:
    """A path into ``document``: a walk from the root that stops at each level with even odds,
    so a field deep in ``ticks`` comes up about as often as a top-level one. Three walks in four
    go into what the report reads."""
    top = [key for key in READ_BY_THE_REPORT if key in document] if draw(st.integers(0, 3)) else []
    path: tuple[Any, ...] = (draw(st.sampled_from(top or _children(document))),)
    value = document[path[0]]
    while True:
        children = _children(value)
        if not children or not draw(st.booleans()):
            return path
        key = draw(st.sampled_from(children))
        path, value = (*path, key), value[key]


def _replaced(document: Any, path: tuple[Any, ...], value: Any, delete: bool) -> Any:
    """A copy of ``document`` with the value at ``path`` replaced (or its key deleted)."""
    copy = json.loads(json.dumps(document))
    parent = copy
    for key in path[:-1]:
        parent = parent[key]
    if delete and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return copy


def _at(document: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        document = document[key]
    return document


@st.composite
def damaged_artifacts(draw: st.DrawFn, document: dict[str, Any]) -> dict[str, Any]:
    """A real artifact with one to three values replaced by any JSON value, or deleted. A number
    is replaced by another number two times in three: the wrong size is likelier than the
    wrong type, and harder to catch."""
    for _ in range(draw(st.integers(1, 3))):
        path = draw(paths_into(document))
        old = _at(document, path)
        number = isinstance(old, (int, float)) and not isinstance(old, bool)
        value = draw(json_numbers if number and draw(st.integers(0, 2)) else json_values)
        document = _replaced(document, path, value, draw(st.integers(0, 4)) == 0)
    return document


@reproducible(200)
@given(data=st.data())
def test_an_artifact_of_the_wrong_shape_is_skipped_or_reported(
        real_runs: RealRuns, scratch: Path, data: st.DataObject) -> None:
    # Its own run id, or it would be skipped as a second copy of the real run.
    document = data.draw(damaged_artifacts({**real_runs.artifact(), "run_id": "damaged"}))
    with scratch_folder(scratch) as folder:
        content = json.dumps(document).encode()
        _, summary = check_report_of(runs_with(real_runs, folder, {"damaged.json": content}), [])
        skipped = {Path(item["file"]).name for item in summary["skipped"]}
        reported = {Path(r["file"]).name for row in summary["rows"] for r in row["runs"]}
        assert "damaged.json" in skipped or "damaged.json" in reported
        _event("reported" if "damaged.json" in reported else "skipped")


@pytest.mark.parametrize("schema", [
    "chaos_shims.run/0", "chaos_shims.run/2", "chaos_shims.run/1.1", "chaos_shims.run/",
    "chaos_shims.run/10", "chaos_shims.report/1", "CHAOS_SHIMS.RUN/1", "", None, 1, ["x"],
])
def test_an_artifact_of_another_version_is_named_and_skipped(
        real_runs: RealRuns, scratch: Path, schema: Any) -> None:
    document = {**real_runs.artifact(), "run_id": "other", "schema": schema}
    with scratch_folder(scratch) as folder:
        runs = runs_with(real_runs, folder, {"other.json": json.dumps(document).encode()})
        _, summary = check_report_of(runs, ["other.json"])
    [reason] = [item["reason"] for item in summary["skipped"]]
    if isinstance(schema, str) and schema.startswith("chaos_shims.run/"):
        assert reason == f"schema {schema} is not supported (this version reads chaos_shims.run/1)"
    else:
        assert reason.startswith("not a chaos_shims run artifact")


# -- reports, as chaos-shims findings reads them ---------------------------------------------------

def check_findings_of(report_file: Path, readable: bool | None) -> None:
    """Findings from a report: written (0) when it is readable, else exit 2 with a message that
    names the file (``readable=None``: either is fine)."""
    output = report_file.with_name("findings.json")
    code, _, err = findings_main(report_file, output)
    assert "Traceback" not in err
    if code == 0:
        assert readable is not False, err
        written = strict_json(output.read_text())
        assert isinstance(written, list)
        for finding in written:
            assert finding["severity"] in findings.SEVERITIES
    else:
        assert code == USAGE_ERROR
        assert readable is not True, err
        assert err.startswith(f"chaos-shims findings: cannot use {report_file}: ") or \
            err.startswith(f"chaos-shims findings: cannot read {report_file}: "), err
        assert not output.exists()


@reproducible(200)
@given(data=st.data())
def test_a_truncated_report_is_read_whole_or_named(
        real_runs: RealRuns, scratch: Path, data: st.DataObject) -> None:
    text = real_runs.report
    block_end = text.index("\n-->") + len("\n-->")
    length = data.draw(st.one_of(st.integers(0, len(text)),
                                 st.integers(block_end - 8, block_end + 1)))
    with scratch_folder(scratch) as folder:
        report_file = folder / "report.md"
        report_file.write_text(text[:length])
        check_findings_of(report_file, readable=length >= block_end)


@reproducible(150)
@given(junk=st.one_of(st.binary(max_size=300),
                      st.binary(max_size=100).map(lambda b: b"<!-- chaos_shims.report/1\n" + b
                                                 + b"\n-->")))
def test_random_bytes_as_a_report_are_named(scratch: Path, junk: bytes) -> None:
    with scratch_folder(scratch) as folder:
        report_file = folder / "report.md"
        report_file.write_bytes(junk)
        check_findings_of(report_file, readable=None)


def _with_block(report_text: str, block_json: str, schema: str = findings.REPORT_SCHEMA) -> str:
    """The report with its machine-readable block replaced (JSON as given: NaN and all)."""
    start, end = report_text.index("<!-- chaos_shims.report/"), report_text.index("\n-->") + 4
    return f"{report_text[:start]}<!-- {schema}\n{block_json}\n-->{report_text[end:]}"


@reproducible(200)
@given(data=st.data())
def test_a_report_summary_of_the_wrong_shape_is_used_or_named(
        real_runs: RealRuns, scratch: Path, data: st.DataObject) -> None:
    summary = findings.extract_summary(real_runs.report)
    damaged = data.draw(damaged_artifacts(summary))
    with scratch_folder(scratch) as folder:
        report_file = folder / "report.md"
        report_file.write_text(_with_block(real_runs.report, json.dumps(damaged)))
        check_findings_of(report_file, readable=None)


@pytest.mark.parametrize("schema", ["chaos_shims.report/2", "chaos_shims.report/0",
                                    "chaos_shims.report/1.0", "chaos_shims.report/x"])
def test_a_report_block_of_another_version_is_named(
        real_runs: RealRuns, scratch: Path, schema: str) -> None:
    summary = findings.extract_summary(real_runs.report)
    with scratch_folder(scratch) as folder:
        report_file = folder / "report.md"
        report_file.write_text(_with_block(real_runs.report, json.dumps(summary), schema))
        check_findings_of(report_file, readable=False)
        _, _, err = findings_main(report_file, folder / "findings.json")
    assert f"its summary block is {schema}; this version reads chaos_shims.report/1" in err


# -- regressions: bugs this suite found, each pinned by an input that hit it -------------------------

def _artifact_with(real: RealRuns, path: tuple[str, ...], value: Any) -> bytes:
    return json.dumps(_replaced({**real.artifact(), "run_id": "damaged"}, path, value, False)).encode()


def _skipped_for(real: RealRuns, scratch: Path, content: bytes) -> str:
    """Why the report skipped ``content`` as runs/damaged.json, beside the real runs."""
    with scratch_folder(scratch) as folder:
        _, summary = check_report_of(runs_with(real, folder, {"damaged.json": content}),
                                     ["damaged.json"])
    [reason] = [item["reason"] for item in summary["skipped"]]
    return str(reason)


def _findings_error(real: RealRuns, scratch: Path, block_json: str) -> str:
    """What chaos-shims findings said of the real report with ``block_json`` as its block."""
    with scratch_folder(scratch) as folder:
        report_file = folder / "report.md"
        report_file.write_text(_with_block(real.report, block_json))
        check_findings_of(report_file, readable=False)
        _, _, err = findings_main(report_file, folder / "findings.json")
    return err


# Numbers no float holds: NaN and Infinity (Python's reader accepts them) and integers past
# 1.8e308 raised OverflowError or ValueError in the report tools; a string float() reads as NaN
# got past the reader. Counts that contradict each other are named with them: trusted, they
# fed the same arithmetic.
@pytest.mark.parametrize(("path", "value", "reason"), [
    (("ticks", "deadline_ms"), math.nan, "is corrupt: NaN is not a JSON number"),
    (("ticks", "deadline_ms"), 10 ** 400, "is corrupt: the number 100000000000…0000 (401 "
                                          "characters) is beyond what a float holds"),
    (("ticks", "count"), math.inf, "is corrupt: Infinity is not a JSON number"),
    (("ticks", "deadline_misses"), -(10 ** 400), "is corrupt: the number -10000000000…0000"),
    (("ticks", "deadline_ms"), "nan", "ticks.deadline_ms = nan is not a finite number"),
    (("ticks", "deadline_misses"), 10 ** 300, "ticks.deadline_misses (1000000000000000000"),
], ids=["nan", "huge-int", "infinity", "huge-negative", "nan-string", "more-misses-than-ticks"])
def test_an_artifact_with_numbers_no_float_holds_is_named_as_corrupt(
        real_runs: RealRuns, scratch: Path, path: tuple[str, ...], value: Any,
        reason: str) -> None:
    assert reason in _skipped_for(real_runs, scratch, _artifact_with(real_runs, path, value))


@pytest.mark.parametrize("value", [10 ** 400, math.nan, -math.inf],
                         ids=["huge-int", "nan", "minus-infinity"])
def test_a_report_block_with_numbers_no_float_holds_is_named_as_corrupt(
        real_runs: RealRuns, scratch: Path, value: Any) -> None:
    summary = _replaced(findings.extract_summary(real_runs.report), ("rows", 0, "error_ticks"),
                        value, False)
    err = _findings_error(real_runs, scratch, json.dumps(summary))
    assert "its summary block is corrupt: " in err, err


def test_a_baseline_p95_of_almost_nothing_leaves_no_infinity_in_the_report(
        real_runs: RealRuns, scratch: Path) -> None:
    """Every baseline tick below the histogram, the fastest 5e-324 ms: the scenario's p95 over
    it is no finite ratio, and the report's block and findings.json are still JSON (the
    embedded block raised ValueError from allow_nan=False, escaping build_report)."""
    baseline = json.loads((real_runs.folder / "runs" / real_runs.baseline).read_text())
    histogram = baseline["ticks"]["histogram"]
    histogram.update(counts={}, underflow=histogram["count"], overflow=0, min_seen_ms=5e-324,
                     max_seen_ms=5e-324)
    with scratch_folder(scratch) as folder:
        runs = runs_with(real_runs, folder, {})
        (runs / "runs" / real_runs.baseline).write_text(json.dumps(baseline))
        output, summary = check_report_of(runs, [])
        strict_json(output.read_text().split("<!-- chaos_shims.report/1\n")[1].split("\n-->")[0])
    [scenario] = [row for row in summary["rows"] if not row["baseline"]]
    assert scenario["p95_regression"] is None
    [p95] = [c for c in scenario["criteria"] if c["criterion"] == "p95_regression"]
    assert p95["value"] is None and p95["status"] == "fail"


# Histogram parameters whose top bucket (min_ms * ratio ** buckets) no float holds raised
# OverflowError in the report.
@pytest.mark.parametrize(("fields", "named"), [
    ({"buckets": 50_000}, "'buckets' = 50000"),
    ({"min_ms": 1e-300, "buckets": 1000, "ratio": 10.0}, "'buckets' = 1000"),
    ({"buckets": 200_000}, "'buckets' = 200000"),
    ({"ratio": 1.0}, "'ratio' = 1"),
    ({"min_ms": "inf"}, "'min_ms' = inf"),
], ids=["top-overflows", "ratio-power-overflows", "too-many", "ratio-one", "infinite-min"])
def test_histogram_parameters_out_of_range_are_named(
        real_runs: RealRuns, scratch: Path, fields: dict[str, Any], named: str) -> None:
    document = {**real_runs.artifact(), "run_id": "damaged"}
    document["ticks"]["histogram"].update(fields)
    reason = _skipped_for(real_runs, scratch, json.dumps(document).encode())
    assert f"tick histogram field {named}" in reason, reason


# recovery.unrecovered sized a list: a few billion took all the memory there was (a soak run
# was OOM-killed at 23 GB), 2**40 raised MemoryError.
@pytest.mark.parametrize("count", [2 ** 40, 3_000_000_000, 10 ** 300],
                         ids=["2**40", "3e9", "10**300"])
def test_an_unrecovered_count_beyond_the_bursts_is_named_not_allocated(
        real_runs: RealRuns, scratch: Path, count: int) -> None:
    reason = _skipped_for(real_runs, scratch,
                          _artifact_with(real_runs, ("recovery", "unrecovered"), count))
    assert f"recovery.unrecovered ({count}) is more than recovery.bursts_ended" in reason


def test_a_huge_unrecovered_count_that_adds_up_is_counted_not_allocated(
        real_runs: RealRuns, scratch: Path) -> None:
    # 2**40: were it allocated again, MemoryError at once rather than an OOM-killed machine.
    document = {**real_runs.artifact(), "run_id": "damaged"}
    document["recovery"].update(bursts_ended=2 ** 40, unrecovered=2 ** 40)
    with scratch_folder(scratch) as folder:
        runs = runs_with(real_runs, folder, {"damaged.json": json.dumps(document).encode()})
        _, summary = check_report_of(runs, [])
    [row] = [row for row in summary["rows"]
             if "damaged.json" in {Path(r["file"]).name for r in row["runs"]}]
    opened = len(row["open_recoveries"])
    assert row["unrecovered_bursts"] >= 2 ** 40 - opened


def test_a_report_row_whose_retry_after_is_no_number_allocates_nothing(
        real_runs: RealRuns, scratch: Path) -> None:
    """chaos-shims findings multiplied the row's retry_after_s by its tick rate: a list times
    2**40 is a list of 2**40 items (MemoryError at once; a billion would be allocated)."""
    summary = findings.extract_summary(real_runs.report)
    [row] = [row for row in summary["rows"] if not row["baseline"]]
    row.update(scenarios=["exch_429"], retry_after_s=[0], tick_rate_hz=2 ** 40,
               unrecovered_bursts=0, worst_recovery_ticks=10, errors_by_type={})
    with scratch_folder(scratch) as folder:
        report_file = folder / "report.md"
        report_file.write_text(_with_block(real_runs.report, json.dumps(summary)))
        check_findings_of(report_file, readable=True)


# JSON nested past the recursion limit raised RecursionError from the readers; nested less
# deeply, a value copied into the report could still exhaust the stack of whatever walked it.
@pytest.mark.parametrize("depth", [200, 100_000])
def test_deeply_nested_json_is_named_as_corrupt(
        real_runs: RealRuns, scratch: Path, depth: int) -> None:
    deep = "[" * depth + "]" * depth
    reason = _skipped_for(real_runs, scratch, deep.encode())
    assert reason == "is corrupt: it nests lists and objects deeper than 64 levels"
    err = _findings_error(real_runs, scratch, deep)
    assert "its summary block is corrupt: it nests lists and objects deeper than 128 levels" in err
