"""The benchmark suite: one group per kind of measurement, each turned into table rows that hold
a goal of issue 6, the measured median, what it is compared with, and a verdict.

``GROUPS`` is the one table of groups; ``run_group`` runs one in this process (the command runs
each in a fresh interpreter: see ``benchmarks/__main__.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

MET = "met"
MISSED = "MISSED"
NO_GOAL = "-"


@dataclass(frozen=True)
class Goal:
    """``measured <op> limit`` (in the row's unit); ``text`` as the issue words it."""

    op: str  # "<" or ">"
    limit: float
    text: str

    def met(self, value: float) -> bool:
        return value < self.limit if self.op == "<" else value > self.limit


@dataclass
class Row:
    """One line of the table: a measured median (in ``unit``) against its goal, and what it
    was compared with in the same run."""

    group: str
    what: str
    goal: Goal | None
    measured: float
    unit: str
    compare: str = ""

    @property
    def verdict(self) -> str:
        if self.goal is None:
            return NO_GOAL
        if not math.isfinite(self.measured):
            return MISSED
        return MET if self.goal.met(self.measured) else MISSED

    def shown(self) -> str:
        return show(self.measured, self.unit)

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "verdict": self.verdict, "shown": self.shown()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Row:
        goal = data["goal"]
        return cls(data["group"], data["what"], None if goal is None else Goal(**goal),
                   float(data["measured"]), data["unit"], data["compare"])


@dataclass
class GroupResult:
    """A group's rows and every number it measured (``details``, written to the JSON)."""

    name: str
    rows: list[Row]
    details: dict[str, Any] = field(default_factory=dict)


def show(value: float, unit: str) -> str:
    """A number as the table prints it."""
    if unit == "/s":
        return f"{value / 1e6:.2f} M/s"
    if unit == "B":
        return f"{value:+,.0f} B"
    if unit == "ns":
        return f"{value:.0f} ns"
    digits = 3 if abs(value) < 0.1 else 2
    return f"{value:.{digits}f} {unit}"


def ratio(ours: float, theirs: float, name: str) -> str:
    """``chaos_shims/<name> = r``: how many times the other's cost chaos_shims' is."""
    if not (math.isfinite(ours) and math.isfinite(theirs)) or theirs <= 0:
        return f"chaos_shims/{name}: n/a"
    shown = f"{ours / theirs:.2f}" if ours / theirs >= 0.01 else f"{ours / theirs:.1e}"
    return f"chaos_shims/{name} = {shown}"


def _joined(values: Mapping[str, float], unit: str, digits: int = 2) -> str:
    return "/".join(f"{v:.{digits}f}" for v in values.values()) + f" {unit}"


# -- the groups ----------------------------------------------------------------------------

def start(quick: bool) -> GroupResult:
    from benchmarks.bench_spine import bench_start

    r = bench_start(pairs=40 if quick else 200, importtime_runs=8 if quick else 30)
    return GroupResult("start", [Row(
        "start", "interpreter start + `import chaos_shims.auto`, chaos disabled (over bare)",
        Goal("<", 1.0, "< 1 ms over bare"), r["auto_off_added_ms"], "ms",
        f"bare start {r['bare_ms']:.1f} ms; median of {r['pairs']} interleaved pairs (middle half "
        f"of the differences {r['auto_off_added_p25_ms']:.2f}..{r['auto_off_added_p75_ms']:.2f} "
        f"ms); CPU time added {r['auto_off_added_cpu_ms']:.2f} ms; the import alone "
        f"{r['auto_off_import_ms']:.2f} ms (-X importtime)")], r)


def activation(quick: bool) -> GroupResult:
    from benchmarks.bench_spine import bench_activation

    r = bench_activation(runs=8 if quick else 30)
    largest = ", ".join(f"{name} {ms:.1f}" for name, ms in
                        list(r["largest_imports_self_ms"].items())[:6])
    heavy = ", ".join(r["heavy_imported"]) or "none"
    imports = r["chaos_shims_imports_self_ms"]
    return GroupResult("activation", [Row(
        "activation", "activation, chaos enabled, before any target is imported",
        Goal("<", 20.0, "< 20 ms"), r["activation_ms"], "ms",
        f"CPU time {r['activation_cpu_ms']:.1f} ms; with its {r['stdlib_modules_imported']} "
        f"standard library modules imported beforehand {r['activation_own_ms']:.1f} ms; import "
        f"self times (-X importtime medians): chaos_shims' {r['chaos_shims_modules_imported']} "
        f"modules {imports['chaos_shims']:.1f} ms, the rest {imports['other']:.1f} ms; largest "
        f"(ms): {largest}; heavy imports: {heavy}")], r)


def rest(quick: bool) -> GroupResult:
    from benchmarks.bench_spine import bench_rest

    r = bench_rest(rounds=5 if quick else 21, number=2_000 if quick else 10_000,
                   loopback_calls=60 if quick else 300)
    rows = []
    for kind in ("sync", "async"):
        added, floor = r[f"{kind}_active_added_us"], r[f"{kind}_wrapt_floor_added_us"]
        rows.append(Row(
            "rest", f"REST call overhead, {kind}, active but not firing",
            Goal("<", 2.0, "< 2 µs"), added, "µs",
            f"bare call {r[f'{kind}_bare_us']:.2f} µs; wrapt pass-through floor +{floor:.2f} µs "
            f"({ratio(added, floor, 'floor')}); dormant +{r[f'{kind}_dormant_added_us']:.2f} µs; "
            f"{r[f'{kind}_active_added_pct_of_loopback_call']:.3f}% of a loopback "
            f"fetch_order_book ({r['loopback_fetch_order_book_ms']:.2f} ms)"))
    return GroupResult("rest", rows, r)


def decisions(quick: bool) -> GroupResult:
    from benchmarks.bench_spine import bench_decisions

    r = bench_decisions(number=20_000 if quick else 200_000, rounds=3 if quick else 7)
    return GroupResult("decisions", [Row(
        "decisions", "decisions per second, one thread",
        Goal(">", 1e6, "> 1 M/s"), r["decisions_per_sec"], "/s",
        f"plan() {r['plan_ns']:.0f} ns with one scenario armed; 4 REST scenarios armed: "
        f"{r['plan_4_scenarios_ns']:.0f} ns a plan, "
        f"{r['decisions_per_sec_4_scenarios'] / 1e6:.2f} M decisions/s")], r)


def clock(quick: bool) -> GroupResult:
    from benchmarks.bench_clock import bench_apply_remove, bench_calls

    calls = bench_calls(number=20_000 if quick else 200_000)
    skew = bench_apply_remove(number=2_000 if quick else 20_000, freezes=5 if quick else 20)
    ours = calls["time()_ns_patched_skewed"]
    time_machine = calls.get("time()_ns_time_machine_ticking", math.nan)
    freezegun = calls.get("time()_ns_freezegun_ticking", math.nan)
    apply_remove = skew["apply+remove_skew_ms"]
    travel = skew.get("time_machine_start+stop_ms", math.nan)
    freeze = skew.get("freezegun_start+stop_ms", math.nan)
    rows = [
        Row("clock", "patched time.time(), a skew applied",
            Goal("<", 300.0, "< 300 ns"), ours, "ns",
            f"unpatched {calls['time()_ns_unpatched']:.0f} ns, dormant "
            f"{calls['time()_ns_patched_dormant']:.0f} ns; time-machine travel (ticking) "
            f"{time_machine:.0f} ns ({ratio(ours, time_machine, 'time-machine')}); freezegun "
            f"freeze_time(tick=True) {freezegun:.0f} ns ({ratio(ours, freezegun, 'freezegun')})"),
        Row("clock", "apply and remove a clock skew",
            Goal("<", 0.1, "< 0.1 ms"), apply_remove, "ms",
            f"time-machine travel start+stop {travel:.4f} ms "
            f"({ratio(apply_remove, travel, 'time-machine')}); freezegun start+stop, ccxt loaded "
            f"{freeze:.2f} ms ({ratio(apply_remove, freeze, 'freezegun')}); a whole "
            f"clock_skew_ms phase start+end "
            f"{skew['phase_start+end_ms']:.4f} ms"),
    ]
    return GroupResult("clock", rows, {**calls, **skew})


def latency(quick: bool) -> GroupResult:
    from benchmarks.bench_latency import bench_latency

    r = bench_latency(quick=quick)
    rows = []
    for kind in ("sync", "async"):
        targets = r[kind]["targets"]
        p99 = {t: v["injected_error_ms"]["p99"] for t, v in targets.items()}
        medians = {t: v["injected_error_ms"]["median"] for t, v in targets.items()}
        floor = {t: v["own_sleep_error_ms"]["p99"] for t, v in targets.items()}
        sleeper = "time.sleep" if kind == "sync" else "asyncio.sleep"
        rows.append(Row(
            "latency", f"latency injection error, {kind} (lat_spike_ms, worst target's p99)",
            Goal("<", 2.0, "p99 < 2 ms"), r[f"{kind}_worst_p99_injected_error_ms"], "ms",
            f"by target {'/'.join(targets)} ms: p99 {_joined(p99, 'ms')}, median "
            f"{_joined(medians, 'ms')}; the app's own {sleeper} of the same targets, p99: "
            f"{_joined(floor, 'ms')}; end to end, paired baseline: worst p99 "
            f"{r[f'{kind}_worst_p99_end_to_end_error_ms']:.2f} ms"))
    return GroupResult("latency", rows, r)


def loop_lag(quick: bool) -> GroupResult:
    from benchmarks.bench_latency import bench_loop_lag

    r = bench_loop_lag(spiked_calls=2 if quick else 6, idle_s=0.5 if quick else 1.0)
    during, idle = r["spike_oversleep_ms"], r["idle_oversleep_ms"]
    return GroupResult("loop_lag", [Row(
        "loop_lag", "event-loop lag of a sibling task during a 500 ms async spike (p99)",
        Goal("<", 5.0, "p99 < 5 ms"), during["p99"], "ms",
        f"{during['n']} 1 ms sleeps over {r['spiked_calls']} spiked calls "
        f"({r['spiked_call_ms']['median']:.0f} ms each): median {during['median']:.2f}, max "
        f"{during['max']:.2f} ms; the idle loop: p99 {idle['p99']:.2f}, max {idle['max']:.2f} ms")],
        r)


def ws(quick: bool) -> GroupResult:
    from benchmarks.bench_ws import bench_ws

    r = bench_ws(quick=quick)
    rows = []
    for client in ("asyncio", "sync"):
        lags = r[client]["lags"]
        medians = {lag: v["hold_error_ms"]["median"] for lag, v in lags.items()}
        p99 = {lag: v["hold_error_ms"]["p99"] for lag, v in lags.items()}
        floor = ""
        if client == "asyncio":
            sleeps = {lag: v["median"] for lag, v in r["asyncio_sleep_floor_ms"].items()}
            floor = f"; asyncio.sleep's own error (median) {_joined(sleeps, 'ms')}"
        rows.append(Row(
            "ws", f"websocket lag error, websockets {client} client (ws_lag_ms, worst lag)",
            Goal("<", 3.0, "median < 3 ms"), r[f"{client}_worst_median_hold_error_ms"], "ms",
            f"by lag {'/'.join(lags)} ms: median {_joined(medians, 'ms')}, p99 "
            f"{_joined(p99, 'ms')}{floor}; end to end by event time: worst median "
            f"{r[f'{client}_worst_median_end_to_end_error_ms']:.2f} ms"))
    return GroupResult("ws", rows, r)


#: growth allowed for "flat": 4 KiB over a million ticks is under 0.005 byte a tick
FLAT_BYTES = 4096.0
#: by this many ticks the busy workload has filled every capped list
CAPS_FULL_TICKS = 100_000


def tick_memory(quick: bool) -> GroupResult:
    from benchmarks.bench_ticks import bench_memory

    steady = bench_memory("steady", (1_000, 10_000, 100_000) if quick else
                          (1_000, 10_000, 100_000, 1_000_000))
    busy = bench_memory("busy", (1_000, 10_000, 100_000, 200_000) if quick else
                        (1_000, 10_000, 100_000, 1_000_000))
    held = busy["bytes_after_ticks"]
    busy["growth_after_caps_full_bytes"] = held[str(busy["growth_to_ticks"])] - held[
        str(CAPS_FULL_TICKS)]

    def counts(result: dict[str, Any]) -> str:
        return "/".join(f"{int(n):.0e}".replace("e+0", "e") for n in result["bytes_after_ticks"])

    def sizes(result: dict[str, Any]) -> str:
        return "/".join(f"{b:,}" for b in result["bytes_after_ticks"].values())

    rows = [
        Row("tick_memory", f"memory of tick statistics, {steady['growth_from_ticks']:,} to "
            f"{steady['growth_to_ticks']:,} ticks (growth)",
            Goal("<", FLAT_BYTES, "flat (< 4 KiB)"), steady["growth_bytes"], "B",
            f"held after {counts(steady)} ticks: {sizes(steady)} B (tracemalloc, chaos_shims' "
            f"allocations, default duty cycle)"),
        Row("tick_memory", f"the same, busy bot, {CAPS_FULL_TICKS:,} to "
            f"{busy['growth_to_ticks']:,} ticks (growth)",
            Goal("<", FLAT_BYTES, "flat once capped lists fill"),
            busy["growth_after_caps_full_bytes"], "B",
            f"held after {counts(busy)} ticks: {sizes(busy)} B; a burst ending every ms "
            f"({busy['bursts_ended']:,} ended), {busy['cancel_storms']:,} cancel storms, "
            f"{busy['error_ticks']:,} error ticks: grows until its capped lists are full"),
    ]
    return GroupResult("tick_memory", rows, {"steady": steady, "busy": busy})


def ticks(quick: bool) -> GroupResult:
    from benchmarks.bench_ticks import tick_costs

    costs = {name: seconds * 1e9 for name, seconds in tick_costs(20_000 if quick else 200_000)}
    others = "; ".join(f"{name} {ns:.0f} ns" for name, ns in costs.items()
                       if name != "active, duty cycle")
    return GroupResult("ticks", [Row(
        "ticks", "tick() per tick, chaos active (duty cycle); not in issue 6",
        Goal("<", 2000.0, "< 2 µs (docs)"), costs["active, duty cycle"], "ns", others)],
        {"ns_per_tick": costs})


#: name -> (what it measures, the function); in the order the command runs them
GROUPS: dict[str, tuple[str, Callable[[bool], GroupResult]]] = {
    "start": ("interpreter start with chaos_shims.auto, chaos off", start),
    "activation": ("activation with chaos enabled, before any target", activation),
    "rest": ("ccxt REST call overhead vs bare and wrapt's floor", rest),
    "decisions": ("decisions per second", decisions),
    "clock": ("patched time.time() and skews vs freezegun and time-machine", clock),
    "latency": ("lat_spike_ms injection error, 10 ms to 1 s, sync and async", latency),
    "loop_lag": ("event-loop lag during a 500 ms async spike", loop_lag),
    "ws": ("ws_lag_ms error on real websockets connections", ws),
    "tick_memory": ("memory of tick statistics up to a million ticks", tick_memory),
    "ticks": ("tick() cost per tick", ticks),
}


def run_group(name: str, quick: bool) -> GroupResult:
    return GROUPS[name][1](quick)
