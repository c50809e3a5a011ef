"""Failed API key authentication, throttled per client address.

Each address may fail ``limit`` times per fixed window of ``window`` seconds; after that it is
refused (the gateway answers 429 with ``Retry-After``) until the window ends, without a
database query. Memory is bounded: at most ``max_addresses`` windows are kept, least recently
failed forgotten first.

Which address counts: the ASGI ``client`` of the connection, i.e. the TCP peer. Behind a
reverse proxy that is the proxy, unless the ASGI server is told to trust the proxy's
``X-Forwarded-For`` (uvicorn: ``FORWARDED_ALLOW_IPS``, empty by default in the Procfile);
trusting it from anyone else would let a client pick a fresh address per attempt. IPv6
addresses count per /64 (one host usually holds a whole /64). A connection without an
address (a Unix socket with no proxy headers) is not throttled.

The windows are per process: N gateway processes allow N × ``limit`` failures per window.
"""

from __future__ import annotations

import ipaddress
import math
import threading
import time
from collections import OrderedDict


def address_key(client: str | None) -> str | None:
    """The unit an address is throttled by: the IPv4 address, or the IPv6 /64."""
    if not client:
        return None
    try:
        ip = ipaddress.ip_address(client.strip("[]"))
    except ValueError:
        return client[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class FailureThrottle:
    """Fixed-window failure counts per address, bounded in memory."""

    def __init__(self, limit: int, window: float, max_addresses: int = 10_000) -> None:
        self.limit = limit
        self.window = window
        self.max_addresses = max_addresses
        self._windows: OrderedDict[str, list[float]] = OrderedDict()  # key -> [start, count]
        self._lock = threading.Lock()

    def retry_after(self, client: str | None) -> int | None:
        """Seconds until ``client`` may try again, or None when it may try now."""
        key = address_key(client)
        if key is None or self.limit <= 0:
            return None
        with self._lock:
            entry = self._windows.get(key)
            if entry is None:
                return None
            left = entry[0] + self.window - time.monotonic()
            if left <= 0:
                del self._windows[key]
                return None
            if entry[1] < self.limit:
                return None
            return max(1, math.ceil(left))

    def failed(self, client: str | None) -> None:
        key = address_key(client)
        if key is None or self.limit <= 0:
            return
        now = time.monotonic()
        with self._lock:
            entry = self._windows.get(key)
            if entry is None or now - entry[0] >= self.window:
                self._windows[key] = [now, 1]
            else:
                entry[1] += 1
            self._windows.move_to_end(key)
            while len(self._windows) > self.max_addresses:
                self._windows.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._windows.clear()

    def __len__(self) -> int:
        return len(self._windows)
