"""dns_flap: a name resolution fails with a temporary failure (EAI_AGAIN), as when the resolver
cannot reach its DNS servers for a moment.

One event is one name lookup that would really ask the resolver: a host given as an IP literal
(or with ``AI_NUMERICHOST``) is never looked up by the C library or by aiohttp, so it is not an
event and never fails. The integrations (``socket_dns``, ``aiohttp_resolver``) ask
``lookup_target`` whether a call is an event, and raise each library's own error for the fault.
"""

from __future__ import annotations

from chaos_shims.core.faults import Fault
from chaos_shims.core.registry import DNS, ProbabilityScenario
from chaos_shims.core.values import Probability

TYPE_CHECKING = False  # not `from typing import ...`: importing typing costs activation ~2 ms
if TYPE_CHECKING:
    from typing import Any


class NameResolutionFailure(Fault):
    """The resolver answers "temporary failure" (``EAI_AGAIN``; c-ares: ``ARES_ETIMEOUT``)."""

    __slots__ = ()

    @property
    def reason_code(self) -> str:
        return "dns_eai_again"


NAME_RESOLUTION_FAILURE = NameResolutionFailure()


class DnsFlap(ProbabilityScenario):
    key = "dns_flap"
    summary = "probability per name resolution that it fails with EAI_AGAIN (temporary failure)"
    simulates = ("a DNS outage or flapping resolver: looking up the exchange's host name fails "
                 "with 'Temporary failure in name resolution' (socket.gaierror EAI_AGAIN); "
                 "requests to IP literals and already open connections are unaffected")
    kind = Probability()
    default = 0.0
    patch_points = ("socket_dns", "aiohttp_resolver")
    surfaces = frozenset({DNS})

    def fault(self) -> Fault:
        return NAME_RESOLUTION_FAILURE


def lookup_target(host: Any, flags: int = 0) -> str | None:
    """The host name a resolver call looks up, or None when the call asks no resolver.

    None for: no host (a passive or local address), an IPv4 literal in any form the C library
    accepts ("127.0.0.1", "127.1", "2130706433"), an IPv6 literal (with or without a zone
    id), and any call with ``AI_NUMERICHOST``. Hosts-file names such as ``localhost`` are
    events: that is what lets a loopback test see the flap (see docs/scenarios/dns_flap.md).
    """
    import socket  # already imported by whoever is resolving; a dict lookup here

    if host is None:
        return None
    if isinstance(host, (bytes, bytearray)):
        host = bytes(host).decode("ascii", "replace")  # an IDNA-encoded name, as sent
    if not isinstance(host, str) or not host:
        return None
    if flags & socket.AI_NUMERICHOST:
        return None
    if not any(character.isspace() for character in host):  # inet_aton ignores " junk"
        try:
            socket.inet_aton(host)
            return None
        except (OSError, ValueError):
            pass
    if ":" in host:
        try:
            socket.inet_pton(socket.AF_INET6, host.split("%", 1)[0])
            return None
        except (OSError, ValueError):
            pass
    return host
