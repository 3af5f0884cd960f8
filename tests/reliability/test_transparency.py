"""Transparency: with chaos active and nothing firing, a target library's own test suite (from
its source distribution) passes exactly as it does without chaos_shims, test by test.

Each target suite runs twice, at the same time, in fresh processes:

- **baseline**: plain pytest, chaos_shims' pytest plugin off (``-p no:chaos_shims``), no
  ``CHAOS_SHIMS_*`` variable and no bootstrap on ``PYTHONPATH``. The probe plugin proves that
  no chaos_shims module was ever imported in that process, so nothing can have been patched.
- **chaos**: the same command under ``chaos-shims run`` with every scenario that can be armed
  without firing (see ``NOTHING_FIRING`` and docs/RELIABILITY.md): live, always ON, each
  per-event scenario at probability 1e-300, clock_skew_ms at 1e-300 ms. The probe proves the
  patch points the suite crosses were patched, that their wrappers decided (each scenario's
  ``draw`` was asked), and that nothing fired but the one clock_skew_ms phase whose skew is
  0 ns; the run artifacts and the JSON-lines log say the same independently.

Both run in a network namespace of their own with only the loopback interface when the machine
allows it (``unshare -n``), and the probe refuses any connection or name lookup to anything but
this machine: target tests can never send traffic elsewhere.

The sdists come from ``scripts/fetch_target_suites.sh`` (network, in set-up). Without them this
module skips, naming the script, unless ``REQUIRE_TARGET_SUITES=1`` (scripts/test.sh sets it).
The variable has no ``CHAOS_SHIMS_`` prefix on purpose: every ``CHAOS_SHIMS_*`` name that is not
a config key is a config error for chaos_shims itself.

CI runs a subset of each suite (``subset`` below: the modules that cross our patch points);
``TRANSPARENCY_FULL=1`` runs the whole suites instead (minutes, not run in CI).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import pytest

FULL = os.environ.get("TRANSPARENCY_FULL") == "1"
#: the whole aiohttp suite takes minutes on 2 cores; the subset in CI far less than 180 s
pytestmark = [pytest.mark.timeout(3600 if FULL else 180)]

ROOT = Path(__file__).resolve().parents[2]
SUPPORT = Path(__file__).resolve().parent / "transparency_support"
MANIFEST = SUPPORT / "target_suites.txt"
CACHE = ROOT / ".cache" / "target-suites"
RESULTS = CACHE / "results" / ("full" if FULL else "subset")
FETCH_SCRIPT = "scripts/fetch_target_suites.sh"
REQUIRE_ENV = "REQUIRE_TARGET_SUITES"

#: One run of a suite may take this long (both run at once); the subset needs well under it.
RUN_TIMEOUT_SEC = 3000.0 if FULL else 120.0
#: When a test's outcome differs between the two runs, both runs are made again this often:
#: a difference that does not come back is the target suite's own flakiness (reported as a
#: warning, with the outcomes), one that comes back every time is a transparency bug (fails).
RECHECKS = 2

#: The smallest value that arms a scenario (0 means off, so a patch point would not be
#: installed). random() returns multiples of 2**-53, so a per-event draw at 1e-300 fires only
#: if it returns exactly 0.0: a 2**-53 chance per decision; with the fixed seed, none does.
NEVER = "1e-300"
PER_EVENT_SCENARIOS = ("net_loss", "exch_429", "exch_5xx", "rate_limit_storm",
                       "reconcile_mismatch", "dns_flap", "ws_disconnect")
#: clock_skew_ms is a phase scenario: always ON, its one decision is at activation. At 1e-300 ms
#: it installs the wall_clock patch point for the whole run with a skew of 0 ns, and adds
#: 1e-303 s to time.time(), which leaves any real timestamp unchanged (the float spacing there
#: is ~2e-7 s). lat_spike_ms and ws_lag_ms fire on every event while ON (no probability), so
#: "armed and not firing" does not exist for them; their patch points are armed by the
#: per-event scenarios above. mem_pressure has no patch point.
NOTHING_FIRING: dict[str, str] = {
    "enabled": "true",
    "dry_run": "false",
    "burst_on_sec": "0",
    "seed": "7",
    **{key: NEVER for key in PER_EVENT_SCENARIOS},
    "clock_skew_ms": NEVER,
}
#: the probe's node id suffix for a module's own outcome at collection (failed or skipped whole)
COLLECTION = "::<collection>"
#: what the chaos run may record: the clock_skew_ms phase started at activation (skew 0 ns)
EXPECTED_FIRED = {("clock_skew_ms", "live"): 1}

#: plugins off in both runs: ours (the runs differ only by the bootstrap), pytest-asyncio
#: (aiohttp's own plugin runs its async tests, as in aiohttp's CI), the cache (no writes)
COMMON_PYTEST_ARGS = ("-p", "no:chaos_shims", "-p", "no:asyncio", "-p", "no:cacheprovider",
                      "-p", "transparency_probe", "-q", "-rN")


@dataclass(frozen=True)
class TargetSuite:
    """One target library's own tests: how to run them, and what they must cross."""

    name: str
    sdist: str  # the manifest's NAME==VERSION
    #: pytest options of every run of this suite (after the common ones)
    options: tuple[str, ...]
    #: what CI runs (test paths, -k), and what the full rerun runs
    subset: tuple[str, ...]
    full: tuple[str, ...]
    #: patch points whose wrappers the suite runs through (must be patched in the chaos run)
    patched: tuple[str, ...]
    #: decision surfaces that must have decided at least once in the chaos run
    surfaces: tuple[str, ...]
    #: run from the unpacked sdist (node ids relative to it), else from the support folder
    in_sdist: bool = True
    extra_env: Mapping[str, str] = field(default_factory=dict)

    @property
    def folder(self) -> Path:
        return CACHE / self.sdist.replace("==", "-")

    @property
    def cwd(self) -> Path:
        return self.folder if self.in_sdist else SUPPORT

    def env(self) -> dict[str, str]:
        return {key: value.format(folder=self.folder) for key, value in self.extra_env.items()}


SUITES = (
    TargetSuite(
        name="aiohttp",
        sdist="aiohttp==3.14.5",
        # aiohttp's pytest.ini stays in force (filterwarnings=error, strict markers, timeouts)
        # except its addopts, which need xdist and pytest-cov; its CI's marker selection is kept.
        options=("-o", "addopts=", "-m", "not dev_mode and not autobahn and not internal"),
        # the resolvers (aiohttp_resolver; socket_dns under ThreadedResolver), the connector's
        # name resolution and DNS cache, and the cookie jar's expiry, which reads time.time()
        # (wall_clock), under freezegun in some tests
        subset=("tests/test_resolver.py", "tests/test_connector.py", "tests/test_cookiejar.py",
                "-k", "test_resolver or dns or resolve or expir or heap"),
        # the whole suite, less the one test that asks the system resolver for a public name
        full=("tests", "--deselect",
              "tests/test_client_functional.py::test_aiohttp_request_ctx_manager_not_found"),
        patched=("aiohttp_resolver", "socket_dns", "wall_clock"),
        surfaces=("dns",),
    ),
    TargetSuite(
        name="ccxt",
        sdist="ccxt==4.5.90",
        options=("-c", "pytest-ccxt.ini"),
        # ccxt's offline runners in full (base_tests_init, test_base_init_ws): all it has
        subset=("ccxt_base_suite.py",),
        full=("ccxt_base_suite.py",),
        patched=("ccxt_rest", "ccxt_reconcile", "ccxt_pro", "aiohttp_resolver", "socket_dns",
                 "wall_clock"),
        surfaces=("rest",),
        in_sdist=False,
        extra_env={"TRANSPARENCY_CCXT_SDIST": "{folder}"},
    ),
)


# -- set-up: the sdists and test dependencies ---------------------------------------------------

def manifest(kind: str) -> list[tuple[str, str]]:
    pins = []
    for line in MANIFEST.read_text(encoding="utf-8").splitlines():
        fields = line.split()
        if len(fields) == 2 and fields[0] == kind:
            name, wanted = fields[1].split("==")
            pins.append((name, wanted))
    return pins


def missing_setup() -> list[str]:
    """What scripts/fetch_target_suites.sh has not done (or what no longer matches)."""
    problems = []
    for name, wanted in manifest("sdist"):
        if not (CACHE / f"{name}-{wanted}" / ".unpacked").exists():
            problems.append(f"the {name} {wanted} sdist is not unpacked in {CACHE}")
        try:
            installed = version(name)
        except PackageNotFoundError:
            installed = "none"
        if installed != wanted:
            problems.append(f"{name} {installed} is installed, its tests are from {wanted}")
    for name, wanted in manifest("test-dep"):
        try:
            installed = version(name)
        except PackageNotFoundError:
            installed = "none"
        if installed != wanted:
            problems.append(f"test dependency {name}=={wanted} is not installed ({installed})")
    return problems


@pytest.fixture(scope="module")
def target_suites_ready() -> None:
    problems = missing_setup()
    if problems:
        reason = (f"target suites not set up: {'; '.join(problems)}; "
                  f"run {FETCH_SCRIPT} (it downloads the pinned sdists)")
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{reason} [{REQUIRE_ENV}=1]", pytrace=False)
        pytest.skip(reason)


# -- running one suite in one mode ------------------------------------------------------------

def chaos_shims_command() -> list[str]:
    script = Path(sys.executable).with_name("chaos-shims")
    return [str(script)] if script.exists() else [sys.executable, "-m", "chaos_shims.cli"]


def loopback_only_prefix() -> list[str]:
    """A network namespace whose only interface is loopback, when the machine lets us."""
    unshare, ip = shutil.which("unshare"), shutil.which("ip")
    if unshare is None or ip is None:
        return []
    prefix = [unshare, "-n", "sh", "-c", f'"{ip}" link set lo up && exec "$@"', "sh"]
    try:
        probe = subprocess.run([*prefix, "true"], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return prefix if probe.returncode == 0 else []


@dataclass
class Run:
    mode: str  # "baseline" | "chaos"
    report_path: Path
    log_path: Path
    process: subprocess.Popen[bytes]
    artifacts: Path | None = None
    jsonl: Path | None = None
    report: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def clean_environment() -> dict[str, str]:
    """The outer environment less anything that could bring chaos or pytest options in."""
    return {key: value for key, value in os.environ.items()
            if not key.startswith("CHAOS_SHIMS_")
            and key not in ("PYTHONPATH", "PYTEST_ADDOPTS", "PYTEST_PLUGINS", "PYTEST_CURRENT_TEST",
                            "COV_CORE_SOURCE", "PYTHONSTARTUP")}


def start_run(suite: TargetSuite, mode: str, args: Sequence[str], folder: Path,
              prefix: Sequence[str]) -> Run:
    folder.mkdir(parents=True, exist_ok=True)
    report_path = folder / f"{mode}.json"
    report_path.unlink(missing_ok=True)
    # PYTHONSAFEPATH (-P for every process): the sdist's own source folder, next to its tests,
    # is never imported, also not by the `python -c ...` children some tests start; every
    # process tests the installed library, the one chaos_shims patches.
    env = {**clean_environment(), **suite.env(), "PYTHONPATH": str(SUPPORT), "PYTHONSAFEPATH": "1",
           "TRANSPARENCY_PROBE_REPORT": str(report_path)}
    pytest_command = [sys.executable, "-P", "-m", "pytest", *COMMON_PYTEST_ARGS, *suite.options,
                      *args]
    artifacts = jsonl = None
    if mode == "chaos":
        artifacts = folder / "chaos-artifacts"
        shutil.rmtree(artifacts, ignore_errors=True)
        jsonl = folder / "chaos-decisions.jsonl"
        jsonl.unlink(missing_ok=True)
        env.update(CHAOS_SHIMS_ARTIFACTS_DIR=str(artifacts), CHAOS_SHIMS_LOG_FILE=str(jsonl))
        sets = [item for key, value in NOTHING_FIRING.items() for item in ("--set", f"{key}={value}")]
        command = [*chaos_shims_command(), "run", *sets, "--", *pytest_command]
    else:
        command = pytest_command
    log_path = folder / f"{mode}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([*prefix, *command], cwd=suite.cwd, env=env, stdout=log,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
    return Run(mode, report_path, log_path, process, artifacts, jsonl)


def stop(runs: Sequence[Run]) -> None:
    """Kill what is still running: our own children's process groups, by id."""
    for run in runs:
        if run.process.poll() is None:
            os.killpg(run.process.pid, signal.SIGKILL)
            run.process.wait(timeout=10)


def finish_runs(runs: Sequence[Run], deadline: float) -> None:
    started = time.monotonic()
    try:
        for run in runs:
            try:
                run.process.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pytest.fail(f"the {run.mode} run did not finish in time; see {run.log_path}",
                            pytrace=False)
            run.seconds = time.monotonic() - started
    finally:  # also when pytest-timeout interrupts the wait: no run outlives the test
        stop(runs)
    for run in runs:
        if not run.report_path.exists():
            tail = run.log_path.read_text(errors="replace")[-3000:]
            pytest.fail(f"the {run.mode} run wrote no probe report (exit {run.process.returncode})"
                        f"; end of {run.log_path}:\n{tail}", pytrace=False)
        run.report = json.loads(run.report_path.read_text(encoding="utf-8"))


def run_both(suite: TargetSuite, args: Sequence[str], folder: Path,
             prefix: Sequence[str]) -> tuple[Run, Run]:
    """Baseline and chaos at the same time: both see the same load on the machine."""
    deadline = time.monotonic() + RUN_TIMEOUT_SEC
    runs = [start_run(suite, "baseline", args, folder, prefix)]
    try:
        runs.append(start_run(suite, "chaos", args, folder, prefix))
    except BaseException:
        stop(runs)
        raise
    finish_runs(runs, deadline)
    return runs[0], runs[1]


# -- what the reports must say -------------------------------------------------------------------

def assert_nothing_of_chaos_shims(run: Run) -> None:
    chaos = run.report["chaos"]
    assert chaos["modules_at_configure"] == [] and chaos["modules_at_finish"] == [], (
        f"chaos_shims was imported in the baseline run: {chaos['modules_at_finish']}")
    assert chaos["active"] is False


def assert_armed_not_firing(suite: TargetSuite, run: Run) -> dict[str, Any]:
    chaos = run.report["chaos"]
    assert chaos["active"] and chaos["same_injector_throughout"], chaos
    assert chaos["disabled_reason"] is None, f"chaos turned itself off: {chaos['disabled_reason']}"
    assert chaos["live"] is True and chaos["mode"] == "live" and chaos["schedule"] == "always ON"
    assert set(chaos["armed"]) == {*PER_EVENT_SCENARIOS, "clock_skew_ms"}, chaos["armed"]
    points = chaos["patch_points"]
    unpatched = [name for name in suite.patched if not points[name]["patched"]]
    assert not unpatched, f"not patched in the chaos run: {unpatched} ({points})"
    for surface in suite.surfaces:
        assert chaos["plans"].get(surface, 0) > 0, f"no {surface} decision was made: {chaos}"
    assert sum(chaos["decisions"].values()) > 0, chaos
    fired = {(scenario, mode): count for scenario, mode, count in chaos["fired"]}
    assert fired == EXPECTED_FIRED, f"something fired: {fired}"
    # The clock_skew_ms phase changed no timestamp: 0 ns, and an offset below float spacing.
    for moment in (chaos["at_configure"], {"clock_skew_ms": chaos["clock_skew_ms_at_finish"],
                                           "clock_offset_s": chaos["clock_offset_s_at_finish"]}):
        assert moment["clock_skew_ms"] == 0.0, moment
        now = time.time()
        assert now + moment["clock_offset_s"] == now, moment
    # The same, from chaos_shims' own outputs: the run artifacts and the JSON-lines log. Every
    # Python process the suite starts (some aiohttp tests run `python -c ...`) inherits the
    # bootstrap, so each is a run of its own: one artifact and one clock_skew_ms record apiece.
    assert run.artifacts is not None and run.jsonl is not None
    documents = [json.loads(path.read_text(encoding="utf-8"))
                 for path in sorted((run.artifacts / "runs").glob("*.json"))]
    assert documents, "the chaos run wrote no run artifact"
    for artifact in documents:
        assert artifact["disabled_reason"] is None and artifact["mode"] == "live", artifact["command"]
        assert artifact["injections"]["by_scenario"] == {"clock_skew_ms": {"live": 1}}, (
            artifact["command"], artifact["injections"])
    lines = [json.loads(line) for line in run.jsonl.read_text(encoding="utf-8").splitlines()
             if line.strip()] if run.jsonl.exists() else []
    assert {(line["scenario"], line["mode"], line["intensity"]) for line in lines} == {
        ("clock_skew_ms", "live", float(NEVER))}, lines
    assert len(lines) == len(documents)
    return chaos


def differences(baseline: Mapping[str, str], chaos: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    return {node: (baseline.get(node, "absent"), chaos.get(node, "absent"))
            for node in sorted(set(baseline) | set(chaos))
            if baseline.get(node) != chaos.get(node)}


def summary(outcomes: Mapping[str, str]) -> dict[str, int]:
    return dict(sorted(Counter(outcomes.values()).items()))


def write_result(suite: TargetSuite, args: Sequence[str], baseline: Run, chaos: Run,
                 different: Mapping[str, tuple[str, str]], flaky: Mapping[str, list[Any]],
                 loopback_namespace: bool) -> None:
    """What a person reads after a rerun: .cache/target-suites/results/<subset|full>/<suite>.json"""
    chaos_state = chaos.report["chaos"]
    result = {
        "suite": suite.sdist,
        "pytest_args": [*suite.options, *args],
        "baseline": {"outcomes": summary(baseline.report["outcomes"]), "seconds": round(baseline.seconds, 1)},
        "chaos": {"outcomes": summary(chaos.report["outcomes"]), "seconds": round(chaos.seconds, 1),
                  "decisions": chaos_state.get("decisions"), "plans": chaos_state.get("plans"),
                  "fired": chaos_state.get("fired"),
                  "patched": sorted(name for name, point in chaos_state.get("patch_points", {}).items()
                                    if point["patched"]),
                  "tests_that_decided": len(chaos_state.get("decisions_by_test", {}))},
        "different_first_run": {node: list(pair) for node, pair in different.items()},
        "flaky_rechecked": flaky,
        "loopback_only_network_namespace": loopback_namespace,
        "network_refused": {"baseline": baseline.report["network_refused"],
                            "chaos": chaos.report["network_refused"]},
    }
    (RESULTS / f"{suite.name}.json").write_text(json.dumps(result, indent=1), encoding="utf-8")


# -- the test -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def network_prefix() -> list[str]:
    return loopback_only_prefix()


@pytest.mark.parametrize("suite", SUITES, ids=[suite.name for suite in SUITES])
def test_target_suite_passes_the_same_with_idle_chaos(
        suite: TargetSuite, target_suites_ready: None, network_prefix: list[str]) -> None:
    args = suite.full if FULL else suite.subset
    folder = RESULTS / suite.name
    baseline, chaos = run_both(suite, args, folder, network_prefix)

    assert_nothing_of_chaos_shims(baseline)
    assert_armed_not_firing(suite, chaos)
    assert baseline.report["outcomes"], f"the baseline run ran no test; see {baseline.log_path}"
    if not FULL:
        # The subset is chosen to stay on this machine; the probe refused nothing.
        assert baseline.report["network_refused"] == chaos.report["network_refused"] == []

    different = differences(baseline.report["outcomes"], chaos.report["outcomes"])
    flaky: dict[str, list[Any]] = {}
    confirmed = dict(different)
    for attempt in range(RECHECKS):
        if not confirmed:
            break
        # The subset again, whole and in the same order, so a difference that depends on what
        # ran before comes back too; the full suites take too long for that: their differing
        # node ids alone (a module that failed or skipped at collection is collected again).
        selection = (sorted({node.removesuffix(COLLECTION) for node in confirmed}) if FULL
                     else list(args))
        again_base, again_chaos = run_both(suite, selection, folder / f"recheck-{attempt + 1}",
                                           network_prefix)
        assert_nothing_of_chaos_shims(again_base)
        still = differences({node: again_base.report["outcomes"].get(node, "absent") for node in confirmed},
                            {node: again_chaos.report["outcomes"].get(node, "absent") for node in confirmed})
        for node in list(confirmed):
            if node not in still:
                flaky[node] = [*confirmed[node], again_base.report["outcomes"].get(node),
                               again_chaos.report["outcomes"].get(node)]
                del confirmed[node]
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_result(suite, args, baseline, chaos, different, flaky, bool(network_prefix))
    if flaky:
        warnings.warn(f"{suite.name}: outcomes that differed once and not again (the suite's own "
                      f"flakiness, [baseline, chaos, recheck baseline, recheck chaos]): {flaky}",
                      stacklevel=1)
    assert not confirmed, (
        f"{suite.name}: these tests end differently with idle chaos, every time "
        f"(baseline, chaos): {confirmed}; logs in {folder}")

