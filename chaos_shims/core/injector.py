"""``ChaosInjector``: the decision engine.

One injector per activation holds the seed's random streams (one per scenario), the duty cycle,
the blast radius, and the records and counts of what fired. The shims ask it through ``plan``;
a bot can ask it directly through ``should_fire`` and ``inject`` at code paths the shims do not
reach, with the same seed, schedule, logging and counts.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections import deque

from chaos_shims.core import env
from chaos_shims.core.config import ChaosConfig
from chaos_shims.core.driver import PhaseDriver
from chaos_shims.core.errors import (
    InjectedConnectionLoss,
    InjectedFault,
    InjectedHTTPError,
    InjectedTimeout,
)
from chaos_shims.core.faults import HTTP_REASONS, ConnectionLoss, Delay, Fault, HttpStatus
from chaos_shims.core.records import (
    DRY_RUN,
    LIVE,
    InjectionRecord,
    JsonlSink,
    log_record,
    now_wall,
)
from chaos_shims.core.registry import PhaseScenario, Scenario
from chaos_shims.core.schedule import DutyCycle

TYPE_CHECKING = False  # not `from typing import ...`: importing typing costs activation ~2 ms
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from chaos_shims.core.metrics import ChaosMetrics
    from chaos_shims.core.schedule import Clock

logger = logging.getLogger("chaos_shims")

#: How many records an injector keeps in memory for inspection; counts stay exact beyond it.
RECORDS_KEPT = 10_000


#: How often the kill file is looked at: "every injection stops within a second".
KILL_LOOK_SEC = 1.0


def in_rollout(instance_id: str, rollout_pct: float) -> bool:
    """Whether this instance is inside the canary share: a stable hash, the same in every run
    and process, so shadow -> 10% -> 50% -> 100% only ever adds instances."""
    if rollout_pct >= 100:
        return True
    import hashlib  # here: only a canary rollout (rollout_pct < 100) pays for it

    digest = hashlib.sha256(instance_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % 10_000 < rollout_pct * 100


def stream_seed(seed: int, key: str, lineage: str = "") -> str:
    """What seeds the stream of scenario ``key`` in the process of ``lineage``.

    ``lineage`` is "" in the process that activated chaos from its configuration, and names a
    child process otherwise (see ``ChaosInjector.continue_as_child``): a child draws its own
    stream, reproducible from the seed, instead of repeating its parent's decisions.
    """
    root = f"chaos_shims:{seed}:{key}"
    return f"{root}:{lineage}" if lineage else root


def scenario_stream(seed: int, key: str, lineage: str = "") -> random.Random:
    """The scenario's own stream: turning one scenario on never shifts another's sequence."""
    # str seeds go through SHA-512, so the stream is the same in every process and run.
    return random.Random(stream_seed(seed, key, lineage))


def default_instance_id() -> str:
    return f"{os.uname().nodename}-{os.getpid()}"


class Decision:
    """The answer to "should this scenario fire here?". True only when a live fault applies."""

    __slots__ = ("fault", "live", "record")

    def __init__(self, fault: Fault | None, live: bool, record: InjectionRecord | None) -> None:
        self.fault = fault
        self.live = live
        self.record = record

    @property
    def fired(self) -> bool:
        """The scenario fired (live or dry-run)."""
        return self.fault is not None

    def __bool__(self) -> bool:
        return self.fault is not None and self.live

    def __repr__(self) -> str:
        return f"Decision(fault={self.fault!r}, live={self.live})"


NOT_FIRED = Decision(None, False, None)


class ChaosInjector:
    """Decides, records and counts; see the module docstring."""

    def __init__(
        self,
        config: ChaosConfig,
        *,
        clock: Clock = time.monotonic,
        registry: Any = None,
        export_metrics: bool = True,
        log_file: str | None = None,
        on_internal_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.config = config
        self._clock = clock
        #: this instance's id; with rollout_pct it decides whether this instance is a canary
        self.instance_id: str = config["instance_id"] or default_instance_id()
        #: which process of the run this is: "" where chaos was activated, else a child's name
        #: (``continue_as_child``); part of every stream's seed
        self.lineage = ""
        #: children this process has forked so far (a bare fork's lineage counts them)
        self.forks = 0
        self.canary = in_rollout(self.instance_id, config["rollout_pct"])
        #: rollbacks to dry-run that stop conditions made: {"reason", "detail", "ts"}
        self.rollbacks: list[dict[str, Any]] = []
        self.killed = False
        self._kill_file: str | None = config["kill_file"]
        self._next_kill_look = float("-inf")
        self.live = False
        self._update_live()
        self.schedule = DutyCycle(config["burst_on_sec"], config["burst_off_sec"], clock=clock)
        self._always_on = self.schedule.always_on
        self._armed: dict[str, Scenario] = {
            scenario.key: scenario(value, config.values, scenario_stream(config.seed, scenario.key))
            for scenario, value in config.active_scenarios()
        }
        self.driver = PhaseDriver(
            self.schedule,
            [s for s in self._armed.values() if isinstance(s, PhaseScenario)],
            live=lambda: self.live and self.disabled_reason is None,
            on_start=self._start_phase,
            on_error=self.fail,
            on_look=self._look_at_kill_file,
        )
        self._by_surface: dict[str, tuple[Scenario, ...]] = {}
        for armed in self._armed.values():
            for surface in armed.surfaces:
                self._by_surface[surface] = (*self._by_surface.get(surface, ()), armed)
        self._include_exchanges: frozenset[str] = config["include_exchanges"]
        self._exclude_exchanges: frozenset[str] = config["exclude_exchanges"]
        self._include_ops: frozenset[str] = config["include_ops"]
        self._exclude_ops: frozenset[str] = config["exclude_ops"]
        self._has_radius = bool(self._include_exchanges or self._exclude_exchanges
                                or self._include_ops or self._exclude_ops)
        self._lock = threading.Lock()
        self._fail_lock = threading.Lock()  # fail() claims turning chaos off once
        self._pid = os.getpid()
        self._counts: dict[tuple[str, str], int] = {}
        self._records: deque[InjectionRecord] = deque(maxlen=RECORDS_KEPT)
        self._seq = 0
        path = log_file if log_file is not None else os.environ.get(env.LOG_FILE)
        self.sink: JsonlSink | None = JsonlSink(path) if path else None
        self._registry = registry
        self._export_metrics = export_metrics
        self._metrics: ChaosMetrics | None = None
        self._on_internal_error = on_internal_error
        self.disabled_reason: str | None = None

    def start(self) -> None:
        """Start following the duty cycle for phase scenarios (a no-op when there are none)."""
        self.driver.start()

    def _start_phase(self, scenario: PhaseScenario, live: bool) -> None:
        fault = scenario.start_phase(live)
        if fault is not None:
            self._record(scenario.key, fault, None, None, None)

    # -- what is armed -------------------------------------------------------------------
    @property
    def scenario_keys(self) -> list[str]:
        return list(self._armed)

    def armed(self, surface: str) -> tuple[Scenario, ...]:
        return self._by_surface.get(surface, ())

    @property
    def metrics(self) -> ChaosMetrics | None:
        if self._metrics is None and self._export_metrics:
            from chaos_shims.core.metrics import metrics_for  # when a target is patched

            self._metrics = metrics_for(self._registry)
            # Every REST call ends in observe(): from now on it is the window's own record
            # method, one call instead of three (same arguments, same meaning).
            self.observe = self._metrics.failures.record  # type: ignore[method-assign]
        return self._metrics

    def is_on(self) -> bool:
        return self.disabled_reason is None and self.schedule.is_on(self._clock())

    def in_blast_radius(self, exchange: str | None, op: str | None) -> bool:
        if exchange is not None:
            if self._include_exchanges and exchange not in self._include_exchanges:
                return False
            if exchange in self._exclude_exchanges:
                return False
        elif self._include_exchanges:
            return False
        if op is not None:
            if self._include_ops and op not in self._include_ops:
                return False
            if op in self._exclude_ops:
                return False
        elif self._include_ops:
            return False
        return True

    # -- deciding ------------------------------------------------------------------------
    def plan(self, surface: str, exchange: str | None, op: str | None,
             target: str | None) -> tuple[Fault, ...]:
        """Decide every armed scenario of ``surface`` for one event; the live faults to apply.

        Dry-run decisions are recorded and counted but never returned.
        """
        armed = self._by_surface.get(surface)
        if not armed or self.disabled_reason is not None:
            return ()
        try:
            now = self._clock()
            if now >= self._next_kill_look:
                self._look_at_kill_file(now)
            if not (self._always_on or self.schedule.is_on(now)):
                return ()
            if self._has_radius and not self.in_blast_radius(exchange, op):
                return ()
            faults: tuple[Fault, ...] = ()
            for scenario in armed:
                fault = scenario.draw(now)
                if fault is not None:
                    self._record(scenario.key, fault, exchange, op, target)
                    if self.live:
                        faults = (*faults, fault)
            return faults
        except Exception as exc:
            self.fail(exc)
            return ()

    def should_fire(self, scenario: str, *, exchange: str | None = None, op: str | None = None,
                    target: str | None = None) -> Decision:
        """Should ``scenario`` fire here? Decides, records and counts like the shims do."""
        armed = self._armed.get(scenario)
        if armed is None or self.disabled_reason is not None:
            return NOT_FIRED
        try:
            now = self._clock()
            if now >= self._next_kill_look:
                self._look_at_kill_file(now)
            if not self.schedule.is_on(now):
                return NOT_FIRED
            if self._has_radius and not self.in_blast_radius(exchange, op):
                return NOT_FIRED
            fault = armed.draw(now)
            if fault is None:
                return NOT_FIRED
            record = self._record(scenario, fault, exchange, op, target)
            return Decision(fault, self.live, record)
        except Exception as exc:
            self.fail(exc)
            return NOT_FIRED

    def inject(self, scenario: str, *, exchange: str | None = None, op: str | None = None,
               target: str | None = None) -> Decision:
        """Decide, and when live apply the fault here: sleep, or raise an ``InjectedFault``."""
        decision = self.should_fire(scenario, exchange=exchange, op=op, target=target)
        if decision and decision.fault is not None:
            if isinstance(decision.fault, Delay):
                time.sleep(decision.fault.ms / 1000.0)
            else:
                _raise_generic(scenario, decision.fault)
        return decision

    async def ainject(self, scenario: str, *, exchange: str | None = None, op: str | None = None,
                      target: str | None = None) -> Decision:
        """``inject`` for async code: delays use ``asyncio.sleep`` and never block the loop."""
        import asyncio  # not at import time: activation must stay light before any target

        decision = self.should_fire(scenario, exchange=exchange, op=op, target=target)
        if decision and decision.fault is not None:
            if isinstance(decision.fault, Delay):
                await asyncio.sleep(decision.fault.ms / 1000.0)
            elif isinstance(decision.fault, ConnectionLoss) and decision.fault.timeout_ms > 0:
                await asyncio.sleep(decision.fault.timeout_ms / 1000.0)
                _raise_generic(scenario, decision.fault, slept=True)
            else:
                _raise_generic(scenario, decision.fault)
        return decision

    def observe(self, op: str, exchange: str, failed: bool) -> None:
        """One REST call ended (failed or not): feeds mm_partial_fail_rate."""
        metrics = self._metrics
        if metrics is None:
            if not self._export_metrics:
                return
            metrics = self.metrics  # normally built already, when the target was patched
        if metrics is not None:
            metrics.failures.record(op, exchange, failed)

    # -- records -------------------------------------------------------------------------
    def _record(self, scenario: str, fault: Fault, exchange: str | None, op: str | None,
                target: str | None) -> InjectionRecord:
        mode = LIVE if self.live else DRY_RUN
        with self._lock:
            self._seq += 1
            record = InjectionRecord(
                ts=now_wall(), scenario=scenario, mode=mode, reason_code=fault.reason_code,
                intensity=fault.intensity, duration_ms=fault.duration_ms, exchange=exchange,
                op=op, target=_without_query(target), seq=self._seq, pid=self._pid,
            )
            key = (scenario, mode)
            self._counts[key] = self._counts.get(key, 0) + 1
            self._records.append(record)
            # Under this lock (the sink serialises writes anyway): the file's lines follow
            # seq, and holding this lock across a fork (before_fork) means no write is half
            # done in the child's copy of the sink.
            if self.sink is not None:
                self.sink.write(record)
        log_record(record)
        metrics = self.metrics
        if metrics is not None:
            metrics.count_injection(scenario, mode)
        return record

    def records(self, scenario: str | None = None) -> list[InjectionRecord]:
        with self._lock:
            found = list(self._records)
        return found if scenario is None else [r for r in found if r.scenario == scenario]

    def count(self, scenario: str | None = None, mode: str | None = None) -> int:
        with self._lock:
            return sum(n for (s, m), n in self._counts.items()
                       if (scenario is None or s == scenario) and (mode is None or m == mode))

    def counts(self) -> dict[tuple[str, str], int]:
        with self._lock:
            return dict(self._counts)

    # -- live or shadow ----------------------------------------------------------------------
    def _update_live(self) -> None:
        self.live = (not self.config.dry_run and self.canary and not self.rollbacks
                     and not self.killed)

    @property
    def mode(self) -> str:
        """Why this instance injects live or not, in a word or two (for logs and artifacts)."""
        if self.config.dry_run:
            return "dry_run"
        if self.killed:
            return "killed"
        if self.rollbacks:
            return "rolled_back"
        if not self.canary:
            return "shadow"
        return "live"

    def _look_at_kill_file(self, now: float | None = None) -> None:
        """While the kill file exists nothing is injected; looked at most once a second."""
        if self._kill_file is None:
            self._next_kill_look = float("inf")
            return
        now = self._clock() if now is None else now
        self._next_kill_look = now + KILL_LOOK_SEC
        killed = os.path.exists(self._kill_file)
        if killed != self.killed:
            self.killed = killed
            self._update_live()
            if killed:
                logger.warning("chaos_shims: kill file %s exists: every injection stops",
                               self._kill_file)
            else:
                logger.warning("chaos_shims: kill file %s is gone: injections resume",
                               self._kill_file)

    def roll_back(self, reason: str, detail: str) -> None:
        """A stop condition tripped: from now on this run is dry-run, and says so everywhere."""
        with self._lock:
            if self.rollbacks:
                return
            self.rollbacks.append({"reason": reason, "detail": detail, "ts": now_wall()})
            self._update_live()
        logger.warning("chaos_shims rolled back to dry-run: %s: %s", reason, detail)
        metrics = self.metrics
        if metrics is not None:
            metrics.count_rollback(reason)
        self.driver.step()  # undo a live phase now, not at the next look

    # -- child processes ---------------------------------------------------------------------
    def before_fork(self) -> bool:
        """Called just before this process forks: hold the bookkeeping lock across the fork,
        so the child's copy of counts, records and JSONL sink is consistent. True when held."""
        return self._lock.acquire(timeout=1.0)

    def after_fork_in_parent(self, held: bool) -> None:
        self.forks += 1
        if held:
            self._lock.release()

    def after_fork_in_child(self, held: bool) -> None:
        """This process is a fork of the one that made this injector: from here on it is an
        instance of its own (``<parent lineage>/fork-<n>``, n counting the parent's forks)."""
        self._lock = threading.Lock()  # the parent's threads, which could hold it, are gone
        self._fail_lock = threading.Lock()
        self._pid = os.getpid()
        inherited = self.sink
        if inherited is not None:
            self.sink = JsonlSink(inherited.path)  # same file, the child's own written/lost
            if held:  # else a parent thread may have been inside it: leave that copy alone
                inherited.close()  # this process's copy of the descriptor; nothing buffered
        # The child's counts, records and seq are its own: its artifact and Prometheus series
        # (a new pid in multiprocess mode) start from zero too.
        self._counts = {}
        self._records = deque(maxlen=RECORDS_KEPT)
        self._seq = 0
        if not self.config["instance_id"]:
            # Another pid is another instance, as for a child that activates itself.
            self.instance_id = default_instance_id()
            self.canary = in_rollout(self.instance_id, self.config["rollout_pct"])
            self._update_live()
        for scenario in self._armed.values():
            scenario.lock = threading.Lock()
        step = f"fork-{self.forks + 1}"  # the parent counts this fork once it returns
        self.forks = 0
        self.continue_as_child(f"{self.lineage}/{step}" if self.lineage else step)
        self.driver.after_fork_in_child()

    def continue_as_child(self, lineage: str) -> None:
        """Draw from the streams of child process ``lineage`` from now on.

        Without this a forked child would repeat its parent's decisions one for one (it copies
        the parent's streams), and a spawned child given the same seed would replay the
        parent's run from the start. Each child's streams are seeded from the seed, the
        scenario and its lineage: different from its parent's and siblings', the same in
        every run of the same program.
        """
        self.lineage = lineage
        for key, scenario in self._armed.items():
            scenario.stream.seed(stream_seed(self.config.seed, key, lineage))

    # -- safety --------------------------------------------------------------------------
    def fail(self, exc: BaseException) -> None:
        """An internal error: chaos turns itself off; the host's call goes on untouched."""
        # Claimed under a lock: threads that hit the same bug at once must not each log it
        # and each turn chaos off (the message is made after, it may be slow or raise).
        with self._fail_lock:
            if self.disabled_reason is not None:
                return
            self.disabled_reason = type(exc).__name__
        try:
            self.disabled_reason = f"{type(exc).__name__}: {exc}"
        except Exception:
            self.disabled_reason = f"{type(exc).__name__} (its message could not be made)"
        self.driver.stop()
        logger.error("chaos_shims: internal error, chaos is now off: %s", self.disabled_reason,
                     exc_info=exc)
        if self._on_internal_error is not None:
            try:
                self._on_internal_error(exc)
            except Exception:
                logger.exception("chaos_shims: error while turning chaos off")

    def close(self) -> None:
        self.driver.stop()
        if self.sink is not None:
            self.sink.close()


def _without_query(target: str | None) -> str | None:
    # Query strings carry signatures and keys: never write them to a log.
    return None if target is None else target.split("?", 1)[0]


def _raise_generic(scenario: str, fault: Fault, *, slept: bool = False) -> None:
    exc: InjectedFault
    if isinstance(fault, ConnectionLoss):
        if fault.timeout_ms > 0:
            if not slept:
                time.sleep(fault.timeout_ms / 1000.0)
            exc = InjectedTimeout(f"chaos_shims {scenario}: timed out after {fault.timeout_ms:g} ms")
        else:
            exc = InjectedConnectionLoss(f"chaos_shims {scenario}: connection reset by peer")
    elif isinstance(fault, HttpStatus):
        reason = fault.reason or HTTP_REASONS.get(fault.status, "")
        exc = InjectedHTTPError(fault.status, fault.headers(),
                                f"chaos_shims {scenario}: HTTP {fault.status} {reason}")
    else:
        raise TypeError(f"no generic form for fault {fault!r}")
    exc.scenario = scenario
    raise exc
