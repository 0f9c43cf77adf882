"""Small pieces both halves of the SDK share: jittered backoff and the websockets version shim."""
from __future__ import annotations

import random
import ssl
from typing import Any

try:  # websockets >= 13: the new asyncio client.
    from websockets.asyncio.client import connect as _connect

    _HEADERS = "additional_headers"
except ImportError:  # websockets 10-12 (Debian 12 ships 10.4): the legacy client.
    from websockets.client import connect as _connect  # type: ignore[no-redef]

    _HEADERS = "extra_headers"


def full_jitter(attempt: int, min_s: float, max_s: float) -> float:
    """Seconds to wait before try ``attempt`` (1, 2, ...): anywhere in [0, min(max_s, min_s * 2^attempt)],
    so that a fleet reconnecting after one outage does not come back in one wave."""
    return random.uniform(0, min(max_s, min_s * 2**attempt))


def trusting(ca_bundle: str | None) -> ssl.SSLContext | None:
    """The system's certificate authorities and those of ``ca_bundle`` (a PEM file: a private CA's,
    or a self-signed certificate fleetd serves with --tls-cert); None: the defaults alone."""
    if ca_bundle is None:
        return None
    context = ssl.create_default_context()
    context.load_verify_locations(cafile=ca_bundle)
    return context


def ws_connect(url: str, headers: dict[str, str], ssl_context: ssl.SSLContext | None = None, **options: Any) -> Any:
    """A WebSocket connection (an async context manager) with the client's headers (its credential
    and namespace), uncompressed: fleetd's messages are small and frequent, and deflate would cost
    more CPU than it saves. ``ssl_context`` (the client's trusted authorities) applies to wss:// only."""
    if ssl_context is not None and url.startswith("wss://"):
        options["ssl"] = ssl_context
    return _connect(url, compression=None, open_timeout=10, close_timeout=2, **{_HEADERS: headers}, **options)


def refused_status(err: BaseException) -> int | None:
    """The HTTP status of a refused WebSocket upgrade, in either websockets API."""
    status = getattr(err, "status_code", None)
    if status is None:
        status = getattr(getattr(err, "response", None), "status_code", None)
    return status
