"""chaos_shims bootstrap: ``chaos-shims run`` puts this folder first on PYTHONPATH.

Python's ``site`` imports this module at start-up in every process of the run (children
inherit PYTHONPATH and the ``CHAOS_SHIMS_*`` environment). It activates chaos as the
environment says, then imports the ``sitecustomize`` this one hides, so the user's own still
runs. Frozen boilerplate: it never raises, and with chaos off it imports nothing. Any Python
the command starts reads it, so it keeps to syntax and calls that Python 3.6 has.
"""

import os
import sys

# Once per interpreter, even if this module is executed again (reloaded, or a second copy of
# this folder on the path). Kept on ``sys`` because module globals do not survive a reload.
_GUARD = "_chaos_shims_bootstrapped"
_OFF = ("0", "false", "no", "off")


def _activate() -> None:
    if getattr(sys, _GUARD, False):
        return
    setattr(sys, _GUARD, True)
    # The environment beats the YAML file, so an explicit "off" needs no further look.
    if os.environ.get("CHAOS_SHIMS_ENABLED", "").strip().lower() in _OFF:
        return
    try:
        # Checks the environment itself, activates once per process, logs a bad config at
        # ERROR and leaves chaos off.
        import chaos_shims.auto  # noqa: F401
    except Exception as exc:  # e.g. an interpreter that does not have chaos_shims installed
        sys.stderr.write(
            f"chaos_shims bootstrap: cannot activate chaos in {sys.executable} "
            f"({exc.__class__.__name__}: {exc}); chaos is off in this process\n"
        )


def _same_folder(entry: str, folder: str) -> bool:
    try:
        return os.path.realpath(entry or os.curdir) == folder
    except Exception:  # sys.path may hold anything
        return False


def _chain_user_sitecustomize() -> None:
    """Import the next ``sitecustomize`` on sys.path, with errors handled as ``site`` does."""
    folder = os.path.realpath(os.path.dirname(os.path.abspath(__file__)))
    ours = sys.modules.pop("sitecustomize", None)
    removed = [(i, entry) for i, entry in enumerate(sys.path) if _same_folder(entry, folder)]
    for i, _ in reversed(removed):
        del sys.path[i]  # never find this file again: no recursion
    try:
        try:
            import sitecustomize  # noqa: F401
        except ImportError as exc:
            if exc.name != "sitecustomize":
                raise
    except Exception as err:
        # What site.execsitecustomize does: report and carry on starting up.
        if sys.flags.verbose:
            sys.excepthook(*sys.exc_info())
        else:
            sys.stderr.write(
                "Error in sitecustomize; set PYTHONVERBOSE for traceback:\n"
                f"{err.__class__.__name__}: {err}\n"
            )
    finally:
        # The user's sitecustomize may have edited sys.path: put back only what was taken.
        for i, entry in removed:
            sys.path.insert(min(i, len(sys.path)), entry)
        # The import machinery looks this name up once this module has run: the user's module
        # when there is one, else this one.
        if ours is not None:
            sys.modules.setdefault("sitecustomize", ours)


_activate()
_chain_user_sitecustomize()
