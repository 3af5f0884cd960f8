"""Patch hygiene over every patch point of every scenario, in every order of import and
activation: generated from CATALOG x PATCH_POINTS, run by ``tests.patch_hygiene.OrderRun``,
which checks every slot a patch point may touch after each step (see its notes for the
semantics checked: activation is global and additive, only ``deactivate()`` unpatches).

* ``test_orders_after_import``: one case per (scenario, patch point), in this process, the
  targets imported first: activate, re-activate, off and on, deactivate twice, repeated,
  interleaved with the next scenario sharing the point, re-activated with a scenario that
  needs other points.
* ``test_orders_around_a_fresh_import``: fresh interpreters, each importing the target
  libraries one by one (``IMPORT_SEQUENCE``); before each import one of two histories
  (``history``: patched at import, or activated and deactivated first), alternating, so that
  each import meets both in one of the two interpreters.
* ``test_points_kept_by_a_reactivation_are_dormant``: what re-activation with another set
  does to the points no longer needed (they stay patched; their scenarios' effects end).
* Two strict xfails pin a gap in ``ccxt_rest``/``ccxt_reconcile`` (not files of this suite):
  ccxt's camelCase method copies (see ``StaleAliasCopies``).
"""

from __future__ import annotations

import time

import pytest

from chaos_shims.activation import activate, deactivate
from chaos_shims.integrations import PATCH_POINTS
from chaos_shims.scenarios import CATALOG
from tests.patch_hygiene import (
    OrderRun,
    points_of,
    run_orders,
    run_orders_in_fresh_interpreter,
)

pytestmark = [pytest.mark.timeout(120), pytest.mark.filterwarnings("error::ResourceWarning")]

SCENARIOS = [scenario.key for scenario in CATALOG]
#: every (scenario, patch point) pair; a scenario that patches nothing is paired with None
CASES = [(scenario.key, point) for scenario in CATALOG for point in scenario.patch_points or (None,)]

#: Modules that import the targets of the patch points one group at a time, in this order,
#: each bringing in exactly the targets of the points named (the runs check it). ``socket``
#: and ``time`` are imported by chaos_shims' own activation, so their points are always
#: "imported first" (the ``"imported"`` step at the end of each run checks that nothing else
#: is left out).
IMPORT_SEQUENCE: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("websockets.asyncio.client", ("websockets_client",)),
    ("websockets.sync.client", ("websockets_client",)),
    ("websockets.legacy.client", ("websockets_client",)),
    ("aiohttp.resolver", ("aiohttp_resolver",)),
    ("ccxt.base.exchange", ("ccxt_rest", "ccxt_reconcile")),
    ("ccxt.async_support.base.exchange",
     ("ccxt_rest", "ccxt_reconcile", "wall_clock", "ccxt_pro")),
)
#: what happens before a fresh import (see ``history``)
HISTORIES = ("on", "off")


def _after(key: str, candidates: list[str]) -> list[str]:
    """``candidates`` in CATALOG order, starting after ``key`` and wrapping around."""
    at = SCENARIOS.index(key)
    order = SCENARIOS[at + 1:] + SCENARIOS[:at]
    return [other for other in order if other in candidates]


def partner(key: str, point: str) -> str | None:
    """The next scenario (CATALOG order, cyclic) that shares ``point`` with ``key``."""
    sharing = [s.key for s in CATALOG if point in s.patch_points and s.key != key]
    return next(iter(_after(key, sharing)), None)


def unrelated(keys: list[str]) -> str:
    """The first scenario after ``keys[-1]`` that patches something, none of their points."""
    mine = points_of(keys)
    elsewhere = [s.key for s in CATALOG if s.patch_points and not mine & set(s.patch_points)]
    return _after(keys[-1], elsewhere)[0]


def orders_after_import(key: str, point: str | None) -> list[str]:
    steps = [f"targets:{point}"] if point else []
    on = f"activate:{key}"
    steps += [
        "deactivate", "exercise",       # a clean start, the library's lazy state made
        on, "exercise", on,             # patched; activated again: nothing changes
        "off", "exercise", on,          # dormant, then back on: nothing changes
        "deactivate", "deactivate", "exercise",  # restored, twice
        on, "deactivate", on, "off", "deactivate",  # repeated
    ]
    if point is not None and (other := partner(key, point)) is not None:
        # the shared point stays patched (once) while either, or none, is on
        steps += [on, f"activate:{key},{other}", f"activate:{other}", "exercise", "off", on,
                  "deactivate", f"activate:{other}", on, "deactivate"]
    # re-activated with another set: the points no longer needed stay patched, dormant
    elsewhere = unrelated([key])
    steps += [on, f"activate:{elsewhere}", "exercise", f"activate:{key},{elsewhere}",
              "deactivate"]
    return steps


def history(kind: str, keys: list[str]) -> list[str]:
    """The steps before a fresh import of the targets of ``keys``' points:

    * off: each activated and deactivated in turn: nothing is patched at import;
    * on: the same, then all of them activated, switched off, and an unrelated scenario
      activated: the points stay enabled across both, so they are patched (dormant) at import.
    """
    cycles = [step for key in keys for step in (f"activate:{key}", "deactivate")]
    if kind == "off":
        return cycles
    assert kind == "on"
    return [*cycles, f"activate:{','.join(keys)}", "off", f"activate:{unrelated(keys)}"]


def fresh_import_run(rotation: int) -> list[str]:
    steps: list[str] = []
    for number, (module, points) in enumerate(IMPORT_SEQUENCE):
        keys = [s.key for s in CATALOG if set(points) & set(s.patch_points)]
        steps += history(HISTORIES[(number + rotation) % len(HISTORIES)], keys)
        steps += [f"import:{module}:{','.join(points)}", "exercise", "deactivate",
                  # and now imported first: activated, exercised, restored
                  f"activate:{','.join(keys)}", "exercise", "deactivate"]
    return [*steps, "imported"]


# -- the generated cases -------------------------------------------------------------------------

def test_every_scenario_and_patch_point_has_cases() -> None:
    assert {point for _, point in CASES if point} == set(PATCH_POINTS)
    assert {key for key, _ in CASES} == set(SCENARIOS)
    sequenced = {point for _, points in IMPORT_SEQUENCE for point in points}
    # socket_dns waits for socket alone, imported by chaos_shims itself
    assert set(PATCH_POINTS) - sequenced == {"socket_dns"}
    for key, point in CASES:
        steps = orders_after_import(key, point)
        assert f"activate:{key}" in steps
        if point is not None and partner(key, point) is not None:
            assert any(step.startswith(f"activate:{key},") for step in steps)


@pytest.mark.parametrize(("key", "point"), CASES, ids=[f"{k}-{p}" for k, p in CASES])
def test_orders_after_import(key: str, point: str | None) -> None:
    outcome = run_orders(orders_after_import(key, point))
    print(f"{key} x {point}: {outcome}")


@pytest.mark.parametrize("rotation", range(len(HISTORIES)),
                         ids=[f"first-{kind}" for kind in HISTORIES])
def test_orders_around_a_fresh_import(rotation: int) -> None:
    started = time.perf_counter()
    outcome = run_orders_in_fresh_interpreter(fresh_import_run(rotation))
    print(f"rotation {rotation}: {outcome} in {time.perf_counter() - started:.1f} s")


def test_a_scenario_without_patch_points_patches_nothing() -> None:
    for key in [s.key for s in CATALOG if not s.patch_points]:
        run = OrderRun()
        run.run(["deactivate", f"activate:{key}", "off", f"activate:{key}", "deactivate"])
        assert run.enabled == set()


def test_points_kept_by_a_reactivation_are_dormant() -> None:
    """Re-activated with another scenario set, the points only the old set needed stay patched
    (activation is additive: only deactivate() unpatches), and they are dormant: the old
    scenarios' effects end with their injector (the skew is removed, lookups resolve)."""
    import socket

    from chaos_shims.core import runtime

    live = {"enabled": True, "dry_run": False, "burst_on_sec": 0, "seed": 1}
    activate(None, **live, clock_skew_ms=60_000, dns_flap=1.0)
    assert time.time() - time.clock_gettime(time.CLOCK_REALTIME) > 59
    with pytest.raises(socket.gaierror):
        socket.getaddrinfo("localhost", 80)
    activate(None, **live, exch_429=1.0)
    assert {"wall_clock", "socket_dns"} <= set(runtime.enabled_points())
    assert abs(time.time() - time.clock_gettime(time.CLOCK_REALTIME)) < 1
    assert socket.getaddrinfo("localhost", 80)
    run = OrderRun()
    run.enabled = set(runtime.enabled_points())
    run.check()  # still wrapped exactly once, over the originals
    deactivate()
    run.enabled = set()
    run.check()


# -- ccxt's camelCase copies (ccxt_rest, ccxt_reconcile) ---------------------------------------

def test_unpatching_restores_ccxt_camelcase_copies() -> None:
    pytest.importorskip("ccxt")
    run_orders(["targets:ccxt_rest", "deactivate", "exercise",
                "activate:net_loss,reconcile_mismatch", "exercise", "exercise", "deactivate"],
               strict_copies=True)


def test_camelcase_methods_are_wrapped_like_their_snake_case_names() -> None:
    ccxt = pytest.importorskip("ccxt")
    ccxt.binance()  # made before activation, as a bot that imports chaos_shims late
    activate(None, enabled=True, dry_run=True, burst_on_sec=0, reconcile_mismatch=0.5)
    try:
        run = OrderRun()
        snake, camel = (ccxt.binance.__dict__[name] for name in ("fetch_balance", "fetchBalance"))
        assert [point for point, _ in run.chain(snake)[0]] == ["ccxt_reconcile"]
        assert [point for point, _ in run.chain(camel)[0]] == ["ccxt_reconcile"]
    finally:
        deactivate()
