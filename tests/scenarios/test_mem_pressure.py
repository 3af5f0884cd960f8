"""mem_pressure: the scenario contract on the process's resident set, then the value kind, the
shares and the cap, backing off, the duty cycle (RSS up during ON, down during OFF), and reading
the memory available on the host and in a cgroup. Ballasts stay small (tens of MiB)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from chaos_shims.activation import activate, deactivate, resolve
from chaos_shims.core import runtime
from chaos_shims.core.errors import ChaosConfigError
from chaos_shims.scenarios import CATALOG, mem_pressure
from chaos_shims.scenarios.mem_pressure import (
    BACKED_OFF,
    BALLAST,
    SKIPPED,
    ByteSize,
    MemoryPressureKind,
    cgroup_headroom,
    meminfo_available,
)
from tests.scenarios.contract import ScenarioContract

pytestmark = [pytest.mark.timeout(60), pytest.mark.filterwarnings("error::ResourceWarning")]

MiB = 1 << 20
SIZE = 64 * MiB


def rss() -> int:
    """The resident set of this process, from /proc/self/status."""
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def wait_for(condition: Callable[[], bool], timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def fixed_memory(monkeypatch: pytest.MonkeyPatch, *values: int | None) -> list[int | None]:
    """Make the memory available read as ``values`` in turn (the last one repeats)."""
    calls: list[int | None] = []

    def available() -> int | None:
        value = values[min(len(calls), len(values) - 1)]
        calls.append(value)
        return value

    monkeypatch.setattr(mem_pressure, "available_memory", available)
    return calls


class TestMemPressure(ScenarioContract):
    key = "mem_pressure"
    live_keys = {"mem_pressure": "64MiB"}
    live_outcome = "ballast"
    seed_events = 3

    @pytest.fixture
    def scenario_target(self) -> int:
        return rss()  # the resident set before any ballast

    def provoke(self, target: Any) -> str:
        # The event is a look at the resident set: is the ballast really held?
        return "ballast" if rss() - target > SIZE * 3 // 4 else "ok"

    # A process-wide scenario patches nothing, so these two contract tests take another form.
    def test_declared_in_its_own_module(self) -> None:
        scenario = CATALOG[self.key]
        assert scenario.__module__ == mem_pressure.__name__
        assert scenario.summary and scenario.simulates
        assert scenario.patch_points == () and scenario.surfaces == frozenset()
        assert not scenario.is_active_value(scenario.default)

    def test_patch_hygiene(self) -> None:
        before = set(runtime.enabled_points())
        self.activate()
        assert set(runtime.enabled_points()) == before  # nothing was patched

    # -- scenario specific ---------------------------------------------------------------------
    def test_rss_really_grows_and_falls_back(self) -> None:
        before = rss()
        injector = self.activate()
        holding = rss()
        assert holding - before >= SIZE * 0.95
        [record] = injector.records(self.key)
        assert (record.mode, record.reason_code, record.intensity) == ("live", BALLAST, SIZE)
        assert record.duration_ms == 0  # always ON: held until chaos stops
        deactivate()
        # measured as a fall (not against the start): the rest of the process may grow a bit
        assert holding - rss() >= SIZE * 0.95

    def test_duty_cycle_holds_during_on_and_frees_during_off(self) -> None:
        before = rss()
        injector = self.activate(burst_on_sec=0.5, burst_off_sec=0.5)
        holding = rss()
        assert holding - before >= SIZE * 0.95  # the first ON phase starts at activation
        assert wait_for(lambda: holding - rss() >= SIZE * 0.95), "not freed in the OFF phase"
        freed = rss()
        assert wait_for(lambda: rss() - freed >= SIZE * 0.95), "not held again in the next ON"
        # the phase is recorded once its ballast is complete
        assert wait_for(lambda: len(injector.records(self.key)) >= 2)
        records = injector.records(self.key)
        assert all(r.duration_ms == 500 and r.intensity == SIZE for r in records)

    def test_dry_run_records_the_size_and_allocates_nothing(self) -> None:
        before = rss()
        injector = self.activate(dry_run=True, burst_on_sec=30, burst_off_sec=90)
        assert rss() - before < SIZE // 4  # no ballast
        [record] = injector.records(self.key)
        assert (record.mode, record.intensity, record.duration_ms) == ("dry_run", SIZE, 30_000)

    def test_rollback_frees_the_ballast_at_once(self) -> None:
        before = rss()
        injector = self.activate()
        holding = rss()
        assert holding - before >= SIZE * 0.95
        injector.roll_back("deadline_miss", "test")
        assert holding - rss() >= SIZE * 0.95
        assert [r.mode for r in injector.records(self.key)] == ["live", "dry_run"]

    def test_levels_are_shares_of_the_memory_available(self, monkeypatch: pytest.MonkeyPatch) -> None:
        fixed_memory(monkeypatch, 1024 * MiB)
        for level, share in mem_pressure.LEVEL_SHARES.items():
            injector = self.activate(dry_run=True, mem_pressure=level)
            [record] = injector.records(self.key)
            assert record.intensity == pytest.approx(1024 * MiB * share, abs=mem_pressure.PAGE)
        fixed_memory(monkeypatch, 640 * MiB)
        before = rss()
        injector = self.activate(mem_pressure="low")  # 5% of 640 MiB, live
        assert rss() - before >= 32 * MiB * 0.95
        assert injector.records(self.key)[0].intensity == 32 * MiB

    def test_cap_is_read_again_at_each_phase_start(self, monkeypatch: pytest.MonkeyPatch,
                                                    caplog: pytest.LogCaptureFixture) -> None:
        config = resolve({"enabled": True, "dry_run": False, "burst_on_sec": 0,
                          "mem_pressure": "256MiB"}, environ={})  # fine with today's memory
        fixed_memory(monkeypatch, 100 * MiB)  # ... but memory got short before the phase
        with caplog.at_level(logging.WARNING, logger="chaos_shims"):
            injector = activate(config)
        assert injector is not None
        [record] = injector.records(self.key)
        assert record.intensity == 50 * MiB  # SAFE_SHARE of what is available
        assert any("capped" in r.getMessage() for r in caplog.records)

    def test_backs_off_when_memory_gets_short_while_growing(
            self, monkeypatch: pytest.MonkeyPatch) -> None:
        # 1 GiB at the start (cap 512 MiB); after the first 64 MiB chunk only 520 MiB is left,
        # which the next chunk would take below the 512 MiB the cap leaves.
        config = resolve({"enabled": True, "dry_run": False, "burst_on_sec": 0,
                          "mem_pressure": "192MiB"}, environ={})
        calls = fixed_memory(monkeypatch, 1024 * MiB, 1024 * MiB, 520 * MiB)
        before = rss()
        injector = activate(config)
        assert injector is not None
        [record] = injector.records(self.key)
        assert (record.reason_code, record.intensity) == (BACKED_OFF, mem_pressure.CHUNK_BYTES)
        assert rss() - before >= mem_pressure.CHUNK_BYTES * 0.95
        assert len(calls) == 3

    def test_unreadable_memory_holds_nothing(self, monkeypatch: pytest.MonkeyPatch) -> None:
        fixed_memory(monkeypatch, None)
        injector = self.activate(mem_pressure="low")
        [record] = injector.records(self.key)
        assert (record.reason_code, record.intensity) == (SKIPPED, 0)


# -- the value kind ---------------------------------------------------------------------------

KIND = MemoryPressureKind()


@pytest.mark.parametrize(("raw", "expected"), [
    ("none", "none"), ("LOW", "low"), (" medium ", "medium"), ("high", "high"), (None, "none"),
    ("512MiB", 512 * MiB), ("1.5GiB", 1536 * MiB), ("200MB", 200_000_000), ("64 mib", 64 * MiB),
    ("4096", 4096), (4096, 4096), ("0", "none"), (0, "none"), ("1.5KiB", 1536), ("2kb", 2000),
])
def test_values_it_takes(raw: Any, expected: Any) -> None:
    assert KIND.parse("mem_pressure", raw) == expected


@pytest.mark.parametrize("raw", ["extreme", "12XB", "-5MiB", "1.5", 1.5, True, "", "MiB", [1],
                                 "5 M"])
def test_values_it_refuses_name_the_key_value_and_what_is_allowed(raw: Any) -> None:
    with pytest.raises(ChaosConfigError) as caught:
        KIND.parse("mem_pressure", raw, "CHAOS_SHIMS_MEM_PRESSURE")
    message = str(caught.value)
    assert "mem_pressure" in message and repr(raw) in message
    assert "none, low, medium or high" in message and "MiB" in message
    assert "CHAOS_SHIMS_MEM_PRESSURE" in message


def test_a_size_above_the_safe_cap_is_refused_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    fixed_memory(monkeypatch, 1024 * MiB)
    assert KIND.parse("mem_pressure", "512MiB") == 512 * MiB
    with pytest.raises(ChaosConfigError) as caught:
        KIND.parse("mem_pressure", "600MiB")
    message = str(caught.value)
    assert "at most 512MiB" in message and "50%" in message and "1GiB" in message
    assert "OOM" in message
    fixed_memory(monkeypatch, None)
    with pytest.raises(ChaosConfigError, match="available memory of this system cannot be read"):
        KIND.parse("mem_pressure", "1MiB")
    assert KIND.parse("mem_pressure", "high") == "high"  # levels are sized at each phase


def test_from_the_environment_and_readable_everywhere() -> None:
    config = resolve(environ={"CHAOS_SHIMS_MEM_PRESSURE": "low"})
    assert config["mem_pressure"] == "low"
    config = resolve(environ={"CHAOS_SHIMS_MEM_PRESSURE": "64MiB", "CHAOS_SHIMS_ENABLED": "1"})
    size = config["mem_pressure"]
    assert isinstance(size, ByteSize) and size == SIZE
    assert f"{size}" == str(size) == "64MiB"
    assert [s.key for s, _ in config.active_scenarios()] == ["mem_pressure"]
    assert not CATALOG["mem_pressure"].is_active_value(resolve(environ={})["mem_pressure"])


# -- how much memory there is ---------------------------------------------------------------------

def test_meminfo_available(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:  24684084 kB\nMemFree:  1000 kB\nMemAvailable:  2048 kB\n")
    assert meminfo_available(str(meminfo)) == 2048 * 1024
    assert meminfo_available(str(tmp_path / "missing")) is None
    real = meminfo_available()
    assert real is not None and real > 0
    available = mem_pressure.available_memory()
    assert available is not None and 0 < available <= real


def _cgroup_tree(tmp_path: Path, files: dict[str, str], proc: str) -> tuple[str, str]:
    for name, text in files.items():
        path = tmp_path / "fs" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    proc_file = tmp_path / "cgroup"
    proc_file.write_text(proc)
    return str(proc_file), str(tmp_path / "fs")


def test_cgroup_v2_headroom_is_the_tightest_level(tmp_path: Path) -> None:
    proc, root = _cgroup_tree(tmp_path, {
        "cgroup.controllers": "cpu memory\n",
        "memory.max": "max\n",  # the root: no limit
        "pod/memory.max": str(2048 * MiB), "pod/memory.current": str(1024 * MiB),
        "pod/memory.stat": f"anon 1\ninactive_file {256 * MiB}\n",
        "pod/bot/memory.max": "max\n", "pod/bot/memory.current": str(512 * MiB),
    }, "0::/pod/bot\n")
    # the pod: 2 GiB limit, 1 GiB used of which 256 MiB is reclaimable cache
    assert cgroup_headroom(proc, root) == (2048 - 1024 + 256) * MiB


def test_cgroup_v1_headroom_and_no_limit(tmp_path: Path) -> None:
    proc, root = _cgroup_tree(tmp_path, {
        "memory/memory.limit_in_bytes": "9223372036854771712\n",
        "memory/memory.usage_in_bytes": str(10 * MiB),
        "memory/job/memory.limit_in_bytes": str(300 * MiB),
        "memory/job/memory.usage_in_bytes": str(100 * MiB),
        "memory/job/memory.stat": f"cache 5\ntotal_inactive_file {50 * MiB}\n",
    }, "4:memory:/job\n1:cpu:/\n")
    assert cgroup_headroom(proc, root) == 250 * MiB
    proc, root = _cgroup_tree(tmp_path / "unlimited", {
        "memory/memory.limit_in_bytes": "9223372036854771712\n",
        "memory/memory.usage_in_bytes": str(10 * MiB),
    }, "4:memory:/somewhere/not/mounted\n")
    assert cgroup_headroom(proc, root) is None
    assert cgroup_headroom(str(tmp_path / "missing"), root) is None


@pytest.fixture(autouse=True)
def _no_ballast_left() -> Iterator[None]:
    yield
    deactivate()
