"""``import chaos_shims.auto`` first thing in a program: chaos as the environment says.

The environment is checked before anything else is imported, so with ``CHAOS_SHIMS_ENABLED``
and ``CHAOS_SHIMS_CONFIG`` unset this costs next to nothing.
"""

import os as _os

if _os.environ.get("CHAOS_SHIMS_ENABLED") or _os.environ.get("CHAOS_SHIMS_CONFIG"):
    from chaos_shims.activation import activate_from_environment as _activate

    _activate()
