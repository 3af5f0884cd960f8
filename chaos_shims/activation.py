"""Turning chaos on and off: the wiring of the core with the scenario and patch-point tables."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from chaos_shims.core import runtime
from chaos_shims.core.config import ChaosConfig, resolve_config
from chaos_shims.core.errors import ChaosConfigError
from chaos_shims.core.injector import ChaosInjector
from chaos_shims.exporter import start_exporter
from chaos_shims.integrations import PATCH_POINTS
from chaos_shims.scenarios import CATALOG

logger = logging.getLogger("chaos_shims")

EXPLICIT = "explicit"
_environment_lock = threading.Lock()
_environment_done = False


def resolve(
    overrides: Mapping[str, Any] | None = None,
    *,
    layers: Sequence[tuple[str, Mapping[str, Any]]] = (),
    environ: Mapping[str, str] | None = None,
    config_file: str | None = None,
) -> ChaosConfig:
    """The config from defaults < YAML < environment < ``layers`` < ``overrides``."""
    explicit = list(layers)
    if overrides:
        explicit.append((EXPLICIT, overrides))
    return resolve_config(CATALOG, explicit, environ=environ, config_file=config_file)


def activate(config: ChaosConfig | None = None, /, *, registry: Any = None,
             **overrides: Any) -> ChaosInjector | None:
    """Turn chaos on as ``config`` (or the environment plus ``overrides``) says.

    Returns the active injector, or None when the config leaves chaos disabled. Patch points
    of the active scenarios are installed now or when their library is imported.
    """
    if config is None:
        config = resolve(overrides)
    elif overrides:
        raise TypeError("pass either a resolved config or keyword overrides, not both")
    if not config.enabled:
        runtime.uninstall(unpatch=False)
        return None
    injector = ChaosInjector(config, registry=registry,
                             on_internal_error=runtime.turn_off_after_internal_error)
    points = {point for scenario, _ in config.active_scenarios() for point in scenario.patch_points}
    runtime.install(injector, [PATCH_POINTS[name] for name in sorted(points)])
    injector.start()
    logger.info(
        "chaos_shims active: %s, seed=%s (%s), %s, scenarios: %s",
        "dry-run" if config.dry_run else "LIVE", config.seed, config.sources["seed"],
        injector.schedule.describe(),
        ", ".join(f"{s.key}={v}" for s, v in config.active_scenarios()) or "none",
    )
    return injector


def deactivate(*, unpatch: bool = True) -> ChaosInjector | None:
    """Turn chaos off; with ``unpatch`` restore every patched object exactly."""
    return runtime.uninstall(unpatch=unpatch)


def active_injector() -> ChaosInjector | None:
    """The injector in force, for a bot to ask directly (``should_fire``, ``inject``)."""
    return runtime.active


def activate_from_environment(environ: Mapping[str, str] | None = None) -> ChaosInjector | None:
    """Automatic activation: a bad config is logged at ERROR and chaos stays off.

    Runs once per process; the host program always keeps running.
    """
    global _environment_done
    with _environment_lock:
        if _environment_done:
            return runtime.active
        _environment_done = True
    try:
        environ = environ if environ is not None else os.environ
        start_exporter(environ)  # a bad CHAOS_SHIMS_METRICS_* is a config error like any other
        from chaos_shims.run import start_run  # here: only processes that activate pay for it

        return start_run(activate(resolve(environ=environ)))
    except ChaosConfigError as exc:
        logger.error("chaos_shims: %s; chaos stays off", exc)
    except Exception:
        logger.exception("chaos_shims: activation failed; chaos stays off")
    return None
