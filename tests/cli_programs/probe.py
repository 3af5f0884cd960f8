"""What a Python process started under ``chaos-shims run`` sees, as one JSON object on stdout.

It never imports chaos_shims or a patched library itself: it only looks at what is loaded.
"""

from __future__ import annotations

import json
import os
import sys

HEAVY = ("wrapt", "prometheus_client", "yaml", "asyncio", "ccxt")


def main() -> None:
    activation = sys.modules.get("chaos_shims.activation")
    injector = activation.active_injector() if activation is not None else None
    site_module = sys.modules.get("sitecustomize")
    print(json.dumps({
        "pid": os.getpid(),
        "pythonpath": os.environ.get("PYTHONPATH", "").split(os.pathsep),
        "sitecustomize": getattr(site_module, "__file__", None),
        "active": injector is not None,
        "seed": injector.config.seed if injector is not None else None,
        "values": injector.config.as_dict() if injector is not None else None,
        "activation_imported": activation is not None,
        "heavy": [name for name in HEAVY if name in sys.modules],
    }))


if __name__ == "__main__":
    main()
