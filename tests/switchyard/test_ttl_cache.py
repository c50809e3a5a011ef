"""The per-process TTL caches the gateway reads its tables, prices, budgets and keys through
(switchyard/ttl_cache.py)."""

import threading
import time

from switchyard.ttl_cache import LruTtlCache, TtlCache


def test_an_entry_is_fresh_for_ttl_seconds_then_a_miss():
    cache = TtlCache(0.1)
    cache.put("k", "v")
    assert cache.get("k") == "v"
    time.sleep(0.12)
    assert cache.get("k") is None
    assert cache.seen("k")  # stale, but still held
    cache.put("k", "w")
    assert cache.get("k") == "w"


def test_ttl_zero_reloads_on_every_lookup():
    cache = TtlCache(0.0)
    loads = []
    for _ in range(3):
        cache.get_or_load("k", lambda: loads.append(1) or len(loads))
        time.sleep(0.001)
    assert len(loads) == 3


def test_get_or_load_loads_once_while_fresh():
    cache = TtlCache(60.0)
    loads = []

    def load():
        loads.append(1)
        return ["row"]

    assert cache.get_or_load(1, load) == ["row"]
    assert cache.get_or_load(1, load) == ["row"]
    assert len(loads) == 1
    assert cache.get_or_load(2, load) == ["row"] and len(loads) == 2


def test_a_falsy_value_is_a_hit():
    cache = TtlCache(60.0)
    loads = []
    assert cache.get_or_load("n", lambda: loads.append(1) or 0) == 0
    assert cache.get_or_load("n", lambda: loads.append(1) or 0) == 0
    assert cache.get_or_load("l", lambda: []) == [] and cache.get("l") == []
    assert len(loads) == 1


def test_a_slow_load_is_stamped_from_before_it_began():
    cache = TtlCache(0.1)

    def slow():
        time.sleep(0.12)
        return "v"

    assert cache.get_or_load("k", slow) == "v"
    assert cache.get("k") is None  # older than the TTL by the time it was stored


def test_pop_and_clear_invalidate():
    cache = TtlCache(60.0)
    cache.put("a", 1)
    cache.put("b", 2)
    cache.pop("a")
    cache.pop("missing")
    assert cache.get("a") is None and not cache.seen("a") and cache.get("b") == 2
    cache.clear()
    assert len(cache) == 0 and cache.get("b") is None


def test_the_ttl_can_be_changed_on_a_live_cache():
    cache = TtlCache(60.0)
    cache.put("k", "v", stamp=time.monotonic() - 10)
    assert cache.get("k") == "v"
    cache.ttl = 5.0
    assert cache.get("k") is None


def test_lru_forgets_the_least_recently_used_entry():
    lru = LruTtlCache(60.0, 3)
    for k in "abcd":
        lru.put(k, k)
    assert len(lru) == 3 and lru.get("a") is None and not lru.seen("a")
    lru.get("b")  # used: "c" is now the oldest
    lru.put("e", "e")
    assert lru.get("c") is None and lru.get("b") == "b"


def test_lru_entries_also_go_stale():
    lru = LruTtlCache(0.05, 10)
    lru.put("k", "v")
    time.sleep(0.07)
    assert lru.get("k") is None and lru.seen("k")
    lru.pop("k")
    assert not lru.seen("k")


def test_lru_stays_bounded_under_concurrent_writers():
    lru = LruTtlCache(60.0, 50)

    def write(base: int) -> None:
        for i in range(2000):
            lru.put(base + i, i)
            lru.get(base + i // 2)

    threads = [threading.Thread(target=write, args=(n * 10_000,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(lru) == 50
