"""Turning chaos on and off: the wiring of the core with the scenario and patch-point tables."""

from __future__ import annotations

import functools
import logging
import os
import sys
import threading
from collections.abc import Mapping, Sequence
from types import ModuleType

from chaos_shims.core import env, importhooks, runtime
from chaos_shims.core.config import ChaosConfig, resolve_config
from chaos_shims.core.errors import ChaosConfigError
from chaos_shims.core.injector import ChaosInjector
from chaos_shims.integrations import PATCH_POINTS
from chaos_shims.scenarios import CATALOG

TYPE_CHECKING = False  # not `from typing import ...`: importing typing costs activation ~2 ms
if TYPE_CHECKING:
    from typing import Any

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
    _follow_children()
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
    if unpatch:
        _unfollow_children()
    return runtime.uninstall(unpatch=unpatch)


def active_injector() -> ChaosInjector | None:
    """The injector in force, for a bot to ask directly (``should_fire``, ``inject``)."""
    return runtime.active


# -- child processes ------------------------------------------------------------------------
# A child must not replay its parent's decisions: a bare os.fork() child continues as
# "<parent lineage>/fork-<n>"; a multiprocessing child (fork, spawn or forkserver) as
# "process-<identity>", the numbers of its default name ("Process-1:2" -> "process-1:2"), so
# the same place in the process tree draws the same stream whatever the start method.

#: the injector whose lock before_fork took, and whether it got it
_forking: tuple[ChaosInjector, bool] | None = None


def _before_fork() -> None:
    global _forking
    injector = runtime.active
    _forking = None if injector is None else (injector, injector.before_fork())


def _after_fork_in_parent() -> None:
    global _forking
    forking, _forking = _forking, None
    if forking is not None:
        forking[0].after_fork_in_parent(forking[1])


def _after_fork_in_child() -> None:
    global _forking
    forking, _forking = _forking, None
    if forking is not None:
        try:
            forking[0].after_fork_in_child(forking[1])
        except Exception as exc:  # never the child's problem: chaos turns itself off there
            forking[0].fail(exc)


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                    after_in_child=_after_fork_in_child)


def _lineage_of(identity: tuple[int, ...]) -> str:
    return "process-" + ":".join(str(n) for n in identity)


def _follow_children() -> None:
    # Never imports multiprocessing: wraps when the program (or a spawned child) does.
    if not importhooks.when_imported("multiprocessing.process", _follow_multiprocessing):
        process_module = sys.modules.get("multiprocessing.process")
        if process_module is not None:  # again, after a deactivate(unpatch=True)
            _follow_multiprocessing(process_module)


def _unfollow_children() -> None:
    process_module = sys.modules.get("multiprocessing.process")
    if process_module is not None:
        wrapper = process_module.BaseProcess._bootstrap
        if getattr(wrapper, "_chaos_shims", False):
            process_module.BaseProcess._bootstrap = wrapper.__wrapped__


def _follow_multiprocessing(process_module: ModuleType) -> None:
    """Wrap ``BaseProcess._bootstrap``, the first and last code of every multiprocessing child
    (coverage.py hooks the same place). A spawned child runs no after-fork hook and activated
    chaos before its identity was known: this is where it is."""
    base = process_module.BaseProcess
    original = base._bootstrap
    if runtime.active is None or getattr(original, "_chaos_shims", False):
        return  # chaos went off before multiprocessing was imported; or wrapped already

    @functools.wraps(original)
    def _bootstrap(self: Any, *args: Any, **kwargs: Any) -> Any:
        injector = runtime.active
        identity = getattr(self, "_identity", ())
        if injector is not None and identity:
            try:
                injector.continue_as_child(_lineage_of(identity))
            except Exception as exc:  # never the child's problem: chaos turns itself off
                injector.fail(exc)
        try:
            return original(self, *args, **kwargs)
        finally:
            run = sys.modules.get("chaos_shims.run")
            if run is not None:
                run.at_multiprocessing_child_end()

    _bootstrap._chaos_shims = True  # type: ignore[attr-defined]
    base._bootstrap = _bootstrap


#: The command lines of multiprocessing's helper processes that run none of the program's
#: code (a spawned child's environment reaches them too): chaos there would only add a run
#: of nothing, an empty artifact, to the campaign.
_HELPER_COMMANDS = ("from multiprocessing.resource_tracker import main",)


def _is_multiprocessing_helper() -> bool:
    argv = getattr(sys, "orig_argv", sys.argv)
    return any(helper in arg for arg in argv for helper in _HELPER_COMMANDS)


def activate_from_environment(environ: Mapping[str, str] | None = None) -> ChaosInjector | None:
    """Automatic activation: a bad config is logged at ERROR and chaos stays off.

    Runs once per process; the host program always keeps running.
    """
    global _environment_done
    with _environment_lock:
        if _environment_done:
            return runtime.active
        _environment_done = True
    if _is_multiprocessing_helper():
        return None
    try:
        environ = environ if environ is not None else os.environ
        if any(environ.get(name) for name in env.EXPORTER_SETTINGS):
            # Only then: the exporter brings socket and threads, and with none of these set
            # it would do nothing. A bad value is a config error like any other.
            from chaos_shims.exporter import start_exporter

            start_exporter(environ)
        from chaos_shims.run import start_run  # here: only processes that activate pay for it

        return start_run(activate(resolve(environ=environ)))
    except ChaosConfigError as exc:
        logger.error("chaos_shims: %s; chaos stays off", exc)
    except Exception:
        logger.exception("chaos_shims: activation failed; chaos stays off")
    return None
