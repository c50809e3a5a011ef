"""One load for many waiters: when the cached tables a gateway reads on every request go stale
(API keys, the routing table, prices, budgets; :mod:`switchyard.ttl_cache`), every request in
flight for the same key would otherwise run its own query on a worker thread at once. Under
load that was one query per concurrent request, every second (profiled: a few percent of the
gateway's CPU, and the threads' contention for the GIL with the event loop). With
:func:`load_once`, the first caller runs the load on a worker thread and the others await its
answer (or its exception).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

from asgiref.sync import sync_to_async

T = TypeVar("T")

_flights: dict[tuple[int, Hashable], asyncio.Future] = {}


async def load_once(key: Hashable, load: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``load(*args, **kwargs)`` on a worker thread, shared by every caller that asks for the
    same ``key`` on this event loop while it runs. A caller that is cancelled stops waiting
    without cancelling the load the others wait for."""
    loop = asyncio.get_running_loop()
    flight_key = (id(loop), key)
    flight = _flights.get(flight_key)
    if flight is None:
        flight = loop.create_task(sync_to_async(load, thread_sensitive=False)(*args, **kwargs))
        _flights[flight_key] = flight
        flight.add_done_callback(lambda _: _flights.pop(flight_key, None))
    return await asyncio.shield(flight)
