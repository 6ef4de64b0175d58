"""Which host addresses a peer connection gathers ICE candidates on.

aioice gathers on every interface except loopback and has no per-connection option, so its
module-level `get_host_addresses` is wrapped once by a function that consults a context
variable. `host_addresses([...])` scopes a choice to the current task (and tasks it starts),
which is where aiortc's `setLocalDescription` gathers. Outside such a scope nothing changes.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Sequence

import aioice.ice

_addresses: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar(
    "classcast_ice_addresses", default=()
)
_original = aioice.ice.get_host_addresses


def _scoped_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    chosen = _addresses.get()
    if not chosen:
        return _original(use_ipv4, use_ipv6)
    return [a for a in chosen if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]


def install() -> None:
    """Idempotent: route aioice's address lookup through the context variable."""
    if aioice.ice.get_host_addresses is not _scoped_host_addresses:
        aioice.ice.get_host_addresses = _scoped_host_addresses


@contextlib.contextmanager
def host_addresses(addresses: Sequence[str]) -> Iterator[None]:
    install()
    token = _addresses.set(tuple(addresses))
    try:
        yield
    finally:
        _addresses.reset(token)
