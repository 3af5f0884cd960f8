"""The run lifecycle: a run starts when chaos is activated from the environment or the bootstrap,
and its artifact is written when the process ends (normal exit, uncaught exception, SIGTERM).

``start_run(injector)`` is what activation calls. From then on ticks go to the run's statistics
(``chaos_shims.ticks``) and the artifact is written:

* at exit, by an ``atexit`` handler (an uncaught exception is named in ``exit_detail``);
* on SIGTERM, by a handler that writes and then does what would have happened without
  chaos_shims: it calls the handler that was there before, or, when that was the default,
  re-raises the signal with the default action, so the exit status stays the SIGTERM one.
  A process that ignores SIGTERM keeps doing so. The signal is never swallowed.

A forked child is a run of its own (its own run id, ticks and artifact, never the parent's
file), written when the child exits: at ``atexit``, or, for a forked multiprocessing child
(which leaves through ``os._exit``), when its code is done (``at_multiprocessing_child_end``).

Chaos must never be why a bot crashes: every failure here is logged and the host goes on.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import sys
import threading

from chaos_shims import ticks
from chaos_shims.core import artifacts
from chaos_shims.core.records import now_wall

TYPE_CHECKING = False  # not `from typing import ...`: importing typing costs activation ~2 ms
if TYPE_CHECKING:
    from pathlib import Path
    from types import FrameType
    from typing import Any

    from chaos_shims.core.injector import ChaosInjector
    from chaos_shims.core.ticks import TickStats

    _SignalHandler = Any  # a callable, signal.SIG_DFL, signal.SIG_IGN or None

__all__ = ["Run", "current_run", "finish_run", "start_run"]

logger = logging.getLogger("chaos_shims")

#: How long a SIGTERM handler waits for the full artifact before writing what it can without
#: locks (a lock the writer needs may be held by the very thread the signal interrupted).
SIGNAL_WRITE_TIMEOUT_SEC = 2.0


class Run:
    """One run: its identity, its injector and tick statistics, and where its artifact goes."""

    def __init__(self, injector: ChaosInjector, directory: Path | str | None = None) -> None:
        self.injector = injector
        self.stats: TickStats = ticks.stats_for(injector)
        self.info = artifacts.RunInfo.now(now_wall())
        self.info.counters_at_start = artifacts.read_counters(injector, build=False)
        #: the artifact's folder (a str: pathlib is imported when the artifact is written)
        self.folder = str(directory) if directory is not None else artifacts.runs_folder()
        self.ended_by: str | None = None
        self.exit_detail: str | None = None
        self._write_lock = threading.Lock()

    @property
    def directory(self) -> Path:
        from pathlib import Path

        return Path(self.folder)

    @property
    def path(self) -> Path:
        """The artifact's file."""
        return self.directory / f"{self.info.run_id}.json"

    def finish(self, ended_by: str, exit_detail: str | None = None, *,
               lockless: bool = False) -> Path | None:
        """Write the artifact (again, if it was written before: same file, newer content).

        The first way a run ended is kept: a SIGTERM that leads to a graceful exit stays
        ``SIGTERM``.
        """
        if self.ended_by is None:
            self.ended_by, self.exit_detail = ended_by, exit_detail
        try:
            document = artifacts.build_artifact(
                self.info, self.injector, self.stats, ended_by=self.ended_by,
                ended_ts=now_wall(), exit_detail=self.exit_detail,
                reconcile=None if lockless else _detection_report(self.injector),
                lockless=lockless)
            if lockless:
                return artifacts.write_artifact(document, self.folder)
            with self._write_lock:
                return artifacts.write_artifact(document, self.folder)
        except Exception as exc:
            logger.error("chaos_shims: could not write the run artifact %s (%s: %s); "
                         "the run's measurements are lost", self.path, type(exc).__name__, exc)
            return None


def _detection_report(injector: ChaosInjector) -> dict[str, Any] | None:
    """Injected vs detected mismatches as chaos_shims.signals counted them for this injector
    (None: not available, and the artifact reads the metrics instead)."""
    try:
        from chaos_shims.signals import detection_report
    except ImportError:
        return None
    return detection_report(injector)


_lock = threading.Lock()
_current: Run | None = None
_atexit_registered = False
_sigterm_installed = False
_previous_sigterm: _SignalHandler = None
#: this process was forked (a multiprocessing child made so leaves through os._exit)
_forked = False
#: the SIGTERM handler is writing the artifact (a second SIGTERM must not cut it short)
_in_sigterm = False


def start_run(injector: ChaosInjector | None, *, directory: Path | str | None = None
              ) -> ChaosInjector | None:
    """Start the run of ``injector`` (None: nothing to do) and return ``injector``.

    Activation calls it as ``return start_run(activate(...))``. A run already in progress in
    this process is finished first (``ended_by: restarted``). Never raises.
    """
    global _current
    if injector is None:
        return None
    try:
        run = Run(injector, directory)
        with _lock:
            previous, _current = _current, run
        if previous is not None:
            previous.finish(artifacts.ENDED_BY_RESTART)
        ticks.bind_run(run.stats)
        _install_exit_handlers()
        logger.info("chaos_shims run %s: artifact at exit in %s", run.info.run_id, run.folder)
    except Exception:
        logger.exception("chaos_shims: could not start the run; ticks and artifacts are off")
    return injector


def current_run() -> Run | None:
    return _current


def finish_run(ended_by: str = artifacts.ENDED_BY_FINISH) -> Path | None:
    """End the run in progress now: write its artifact and stop measuring ticks for it."""
    global _current
    with _lock:
        run, _current = _current, None
    if run is None:
        return None
    ticks.bind_run(None)
    return run.finish(ended_by)


# -- exit handlers ------------------------------------------------------------------------------

def _install_exit_handlers() -> None:
    global _atexit_registered, _sigterm_installed, _previous_sigterm
    if not _atexit_registered:
        atexit.register(_at_exit)
        _atexit_registered = True
    if _sigterm_installed:
        return
    if threading.current_thread() is not threading.main_thread():
        logger.info("chaos_shims: activated off the main thread; no SIGTERM handler, the "
                    "artifact is written at exit")
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous is signal.SIG_IGN:
        return  # the process ignores SIGTERM: it does not end the run
    _previous_sigterm = previous
    signal.signal(signal.SIGTERM, _on_sigterm)
    _sigterm_installed = True


def _after_fork_in_child() -> None:
    """The child continues as a run of its own: the parent's run (and its artifact file) stay
    the parent's, and ticks measured here are this run's."""
    global _current, _lock, _forked
    _lock = threading.Lock()  # a parent thread may have held it at the fork
    _forked = True
    inherited, _current = _current, None
    if inherited is None:
        return
    try:
        run = Run(inherited.injector, inherited.folder)
        _current = run
        ticks.bind_run(run.stats)
    except Exception:
        ticks.bind_run(None)
        logger.exception("chaos_shims: could not start the forked child's run; its ticks and "
                         "artifact are off")


os.register_at_fork(after_in_child=_after_fork_in_child)


def at_multiprocessing_child_end() -> None:
    """A multiprocessing child's code is done. A forked one (fork, forkserver) leaves through
    ``os._exit`` and never runs ``atexit``: its artifact is written now. A spawned one exits
    normally and ``atexit`` writes it."""
    if _forked:
        _at_exit()


def _at_exit() -> None:
    run = _current
    if run is None:
        return
    # Set by the interpreter when an uncaught exception was printed on the way out.
    failure = getattr(sys, "last_value", None)
    if run.ended_by is None and failure is not None:
        run.finish(artifacts.ENDED_BY_EXCEPTION, f"{type(failure).__name__}: {failure}")
    else:
        run.finish(artifacts.ENDED_BY_EXIT)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    global _in_sigterm
    if _in_sigterm:
        # A second SIGTERM while the first one's artifact is being written (Python runs the
        # handler again inside the first one's wait): the first handler dies of it once the
        # artifact is complete. Two pending SIGTERMs are one for the kernel too.
        return
    _in_sigterm = True
    run = _current
    if run is not None and run.ended_by is None:
        _write_at_signal(run, artifacts.ENDED_BY_SIGTERM)
    _in_sigterm = False  # a handler of the bot's, chained below, may choose to carry on
    previous = _previous_sigterm
    if callable(previous):
        previous(signum, frame)
        return
    # The default action: die of SIGTERM, as without chaos_shims (exit status -15 / 143).
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def _write_at_signal(run: Run, ended_by: str) -> None:
    """Write from a helper thread; if the interrupted thread holds a lock the writer needs,
    write without locks instead of waiting forever."""
    writer = threading.Thread(target=run.finish, args=(ended_by,), daemon=True,
                              name="chaos_shims-artifact")
    writer.start()
    writer.join(SIGNAL_WRITE_TIMEOUT_SEC)
    if writer.is_alive():
        logger.warning("chaos_shims: the artifact writer is blocked; writing what can be read "
                       "without locks")
        run.finish(ended_by, lockless=True)


def _reset_for_tests() -> None:
    """Forget the run in progress without writing it, and take the exit handlers out again
    (tests start runs inside the test process)."""
    global _current, _atexit_registered, _sigterm_installed, _previous_sigterm
    with _lock:
        _current = None
    ticks.bind_run(None)
    if _atexit_registered:
        atexit.unregister(_at_exit)
        _atexit_registered = False
    if _sigterm_installed and signal.getsignal(signal.SIGTERM) is _on_sigterm:
        signal.signal(signal.SIGTERM, _previous_sigterm if _previous_sigterm is not None
                      else signal.SIG_DFL)
    _sigterm_installed = False
    _previous_sigterm = None
