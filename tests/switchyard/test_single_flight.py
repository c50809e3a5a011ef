"""load_once: concurrent callers of one key share one load on a worker thread."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from switchyard.single_flight import load_once


async def test_concurrent_callers_share_one_load_and_later_ones_load_again():
    calls: list[str] = []

    def load(tag: str) -> str:
        calls.append(threading.current_thread().name)
        time.sleep(0.1)
        return f"answer-{tag}"

    answers = await asyncio.gather(*(load_once("k", load, "a") for _ in range(20)))
    assert answers == ["answer-a"] * 20 and len(calls) == 1
    assert calls[0] != threading.current_thread().name  # off the event loop
    assert await load_once("k", load, "b") == "answer-b" and len(calls) == 2
    # Other keys are other loads.
    await asyncio.gather(load_once("x", load, "x"), load_once("y", load, "y"))
    assert len(calls) == 4


async def test_every_waiter_gets_the_loads_exception():
    def load() -> None:
        time.sleep(0.05)
        raise LookupError("database gone")

    results = await asyncio.gather(*(load_once("e", load) for _ in range(5)),
                                   return_exceptions=True)  # fmt: skip
    assert all(isinstance(r, LookupError) for r in results)


async def test_a_cancelled_caller_does_not_cancel_the_others_load():
    def load() -> str:
        time.sleep(0.2)
        return "done"

    first = asyncio.create_task(load_once("c", load))
    second = asyncio.create_task(load_once("c", load))
    await asyncio.sleep(0.05)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert await second == "done"
