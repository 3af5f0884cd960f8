"""``import chaos_shims.auto`` first thing in a program: chaos as the environment says.

The environment is checked before anything else is imported, so with ``CHAOS_SHIMS_ENABLED``
and ``CHAOS_SHIMS_CONFIG`` unset this costs next to nothing.
"""

import os as _os

_enabled = _os.environ.get("CHAOS_SHIMS_ENABLED", "").strip().lower()
# The environment beats YAML: an explicit "off" needs no config resolution at all.
if _enabled not in ("0", "false", "no", "off") and (_enabled or _os.environ.get("CHAOS_SHIMS_CONFIG")):
    from chaos_shims.activation import activate_from_environment as _activate

    _activate()
