"""Durable Redis stream → PostgreSQL ingestion, shared by usage records and request logs.

Producers add one entry per event with :func:`stream_add` (before the client gets its final
bytes); every stream is capped at ``SWITCHYARD_STREAM_MAXLEN`` entries. A consumer group reads
in bulk, inserts with ``ON CONFLICT DO NOTHING`` on a unique id, then XACKs and XDELs. If a
consumer dies between insert and ack, another claims the entries after ``claim_idle_ms`` and
inserts them again: the unique id makes that a no-op, so nothing is lost and nothing is counted
twice.

An entry never blocks a batch. Every field is sanitised on the way in (NUL characters stripped,
strings cut to their column, numbers and dates parsed leniently, JSON cleaned); if the batch
still fails, it is stored row by row and each row that still cannot be stored goes to the
dead-letter table (the model registered with :func:`register_dead_letters`: serving's
``DeadLetter``) with the reason, visible in the console. Only an unreachable database
(``OperationalError``/``InterfaceError``) leaves a batch pending, to be retried: that is an
outage, not a bad row.

The apps above this one plug in from their ``AppConfig.ready()``: each registers its stream's
ingestor (:func:`register_ingestor`), and serving registers the dead-letter model, so that this
module imports none of them.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import (
    DatabaseError,
    InterfaceError,
    OperationalError,
    connection,
    models,
    transaction,
)

log = logging.getLogger(__name__)

# Redis hash: stream name -> how many of its entries were dead-lettered (for /metrics).
DEAD_LETTER_COUNTS = "sy:deadletters"
# The share of the cap at which ingestion logs an error on every drain (the stream is backing
# up: past the cap, XADD trims the oldest entries, which are the ones not yet stored).
NEAR_CAP = 0.8

# Rows whose fields are faulty (not an outage): store row by row, dead-letter the failures.
_ROW_ERRORS = (
    DatabaseError,
    ValueError,
    TypeError,
    KeyError,
    OverflowError,
    ArithmeticError,
    RecursionError,
)
# The database itself is unreachable: leave the batch pending and try again later.
_OUTAGE_ERRORS = (OperationalError, InterfaceError)

# Every stream's ingestor by stream name, registered by the apps (AppConfig.ready()).
INGESTORS: dict[str, StreamIngestor] = {}
# Where entries that cannot be stored go: a model with stream, entry_id, payload and error
# fields, registered by serving (serving.models.DeadLetter).
_dead_letter_model: type[models.Model] | None = None


# ---- producers -------------------------------------------------------------------------------


def stream_add(client: Any, stream: str, fields: dict[str, str], *, maxlen: int | None = None):
    """XADD ``fields`` to ``stream``, capped at ``SWITCHYARD_STREAM_MAXLEN`` entries (approximate
    trimming, which Redis does cheaply in whole nodes). ``client`` may be a sync or asyncio
    client or a pipeline: whatever its ``xadd`` returns is returned (await it for asyncio).

    The cap bounds Redis memory if ingestion stops; past it the oldest entries (the ones not yet
    stored) are dropped, so ingestion logs an error when a stream passes 80% of it."""
    cap = maxlen if maxlen is not None else settings.SWITCHYARD_STREAM_MAXLEN
    return client.xadd(stream, fields, maxlen=cap, approximate=True)


# ---- sanitising ------------------------------------------------------------------------------


def clean_text(value: Any, max_length: int | None = None) -> str:
    """A string PostgreSQL accepts: no NUL, no lone surrogates, at most ``max_length``."""
    if value is None:
        return ""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    text = str(value)
    if "\x00" in text:
        text = text.replace("\x00", "")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    if max_length is not None and len(text) > max_length:
        text = text[:max_length]
    return text


def clean_json(value: Any, *, depth: int = 0, max_depth: int = 64) -> Any:
    """``value`` (parsed JSON) with every string and key cleaned and non-finite numbers nulled;
    anything nested deeper than ``max_depth`` is replaced by a marker string."""
    if depth > max_depth:
        return "[nested too deep]"
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {clean_text(k): clean_json(v, depth=depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean_json(v, depth=depth + 1) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, bool | int | float):
        return value
    return clean_text(value)


def parse_json(text: str | None) -> Any:
    """A JSON field from a stream entry, cleaned; unparseable text is kept (cleaned, cut) as
    ``{"unparsed": ...}`` rather than failing the row."""
    if not text:
        return None
    try:
        return clean_json(json.loads(text))
    except (ValueError, RecursionError):
        return {"unparsed": clean_text(text, 4096)}


def to_int(value: Any, default: int = 0) -> int:
    """An integer from a stream field; empty or malformed gives ``default`` (floats truncate)."""
    if value is None or value == "":
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        pass
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return default
    return int(number) if math.isfinite(number) else default


def to_optional_int(value: Any) -> int | None:
    """An id (a foreign key) or None when empty or malformed."""
    if value is None or value == "":
        return None
    number = to_int(value, -1)
    return number if number >= 0 else None


def to_float(value: Any, default: float = 0.0) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return default
    return number if math.isfinite(number) else default


def to_datetime(value: Any) -> dt.datetime:
    """An aware datetime from ISO text; malformed gives now (UTC), naive is taken as UTC."""
    try:
        when = dt.datetime.fromisoformat(str(value))
    except (TypeError, ValueError):
        return dt.datetime.now(dt.UTC)
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)


def fit_row(obj: models.Model, *, numbers: bool = True) -> models.Model:
    """Make every field of ``obj`` storable: strings cleaned and cut to their column, JSON
    cleaned; with ``numbers``, integers clamped to their column's range and non-finite floats
    zeroed too (without, a number out of range fails the row, which is dead-lettered)."""
    for field in obj._meta.concrete_fields:
        if field.primary_key or field.is_relation:
            continue
        value = getattr(obj, field.attname)
        if value is None:
            continue
        if isinstance(field, models.JSONField):
            setattr(obj, field.attname, clean_json(value))
        elif isinstance(field, models.CharField | models.TextField):
            setattr(obj, field.attname, clean_text(value, field.max_length))
        elif not numbers:
            continue
        elif isinstance(field, models.IntegerField):  # every integer kind
            low, high = connection.ops.integer_field_range(field.get_internal_type())
            number = to_int(value)
            low = -(2**63) if low is None else low
            high = 2**63 - 1 if high is None else high
            setattr(obj, field.attname, min(max(number, low), high))
        elif isinstance(field, models.FloatField):
            setattr(obj, field.attname, to_float(value))
    return obj


def _decode(data: dict) -> dict[str, str]:
    """A stream entry's fields as text (bytes that are not UTF-8 are replaced, not fatal)."""
    return {
        clean_text(k): v.decode("utf-8", "replace") if isinstance(v, bytes) else clean_text(v)
        for k, v in data.items()
    }


# ---- registration ----------------------------------------------------------------------------


def register_ingestor(ingestor: StreamIngestor) -> None:
    """Make ``ingestor`` the one for its stream: dead-letter retries and the stream metrics
    find it here. Called from the owning app's ``AppConfig.ready()``."""
    INGESTORS[ingestor.stream] = ingestor


def register_dead_letters(model: type[models.Model]) -> None:
    """Store entries that cannot be stored as rows of ``model`` (fields ``stream``,
    ``entry_id``, ``payload`` and ``error``). Called from serving's ``AppConfig.ready()``."""
    global _dead_letter_model
    _dead_letter_model = model


# ---- dead letters ----------------------------------------------------------------------------


def _dead_letter(stream: str, entry_id: str, fields: dict[str, str], error: BaseException | str):
    if _dead_letter_model is None:
        raise ImproperlyConfigured("No dead-letter model registered (serving registers one).")
    reason = clean_text(
        error if isinstance(error, str) else f"{type(error).__name__}: {error}", 500
    )
    log.error("dead-lettering %s entry %s: %s", stream, entry_id, reason)
    _dead_letter_model.objects.create(
        stream=clean_text(stream, 64),
        entry_id=clean_text(entry_id, 64),
        payload={k: clean_text(v, 100_000) for k, v in fields.items()},
        error=reason,
    )


# ---- ingestion -------------------------------------------------------------------------------


@dataclass
class StreamIngestor:
    """Drains one stream into one table through a consumer group (see the module's docstring);
    ``build`` turns entries' fields into unsaved rows. Register it with
    :func:`register_ingestor`."""

    stream: str
    group: str
    model: type[models.Model]
    build: Callable[[list[dict[str, str]]], list[models.Model]]
    batch: int = 5000
    claim_idle_ms: int = 60_000
    # COPY the batch into a temporary table, then INSERT … SELECT … ON CONFLICT DO NOTHING:
    # several times faster than a multi-row INSERT built by the ORM (plain columns only).
    copy: bool = False
    # Clamp numbers into their columns (a log); False for money, where a number out of range
    # sends the entry to the dead-letter table instead of storing a guess.
    lenient_numbers: bool = True
    # A PostgreSQL advisory lock key taken shared by every insert transaction, so that a
    # reader holding it exclusively (budget reconciliation) sees no ingestion in between.
    advisory_lock: int | None = None

    @property
    def consumer(self) -> str:
        return f"{socket.gethostname()}-{os.getpid()}"

    def ensure_group(self, r: redis.Redis) -> None:
        try:
            r.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def build_row(self, fields: dict[str, str]) -> models.Model:
        """One storable row from one entry's fields (raises if the entry is unusable)."""
        return fit_row(self.build([fields])[0], numbers=self.lenient_numbers)

    def _prepare(self) -> None:
        """At the start of an insert transaction: check foreign keys per statement (so a bad
        row fails here even inside an outer transaction), and take the shared lock."""
        with transaction.get_connection().cursor() as cur:
            cur.execute("SET CONSTRAINTS ALL IMMEDIATE")
            if self.advisory_lock is not None:
                cur.execute("SELECT pg_advisory_xact_lock_shared(%s)", [self.advisory_lock])

    def _insert(self, rows: list[models.Model], *, copy: bool) -> None:
        with transaction.atomic():
            self._prepare()
            if copy:
                self._copy_insert(rows)
            else:
                self.model.objects.bulk_create(rows, ignore_conflicts=True, batch_size=1000)

    def store_one(self, fields: dict[str, str]) -> None:
        """Store one entry on its own (raises what stops it: used for retries too)."""
        self._insert([self.build_row(fields)], copy=False)

    def _store(self, r: redis.Redis, entries: list[tuple[bytes, dict]]) -> int:
        if not entries:
            return 0
        ids = [eid for eid, _ in entries]
        # Entries trimmed or deleted before a claim come back without fields: nothing to store.
        live = [(eid.decode(), _decode(data)) for eid, data in entries if data]
        try:
            rows = self.build([fields for _, fields in live])
            rows = [fit_row(row, numbers=self.lenient_numbers) for row in rows]
            self._insert(rows, copy=self.copy)
        except _OUTAGE_ERRORS:
            raise  # the database is down: the entries stay pending and are claimed again
        except _ROW_ERRORS as exc:
            # One bad entry must not block the rest: store one by one and park the failures
            # in the dead-letter table with the reason.
            log.warning("%s batch failed (%s); storing row by row", self.stream, exc)
            dead = 0
            for eid, fields in live:
                try:
                    self.store_one(fields)
                except _OUTAGE_ERRORS:
                    raise
                except _ROW_ERRORS as row_exc:
                    _dead_letter(self.stream, eid, fields, row_exc)
                    dead += 1
            if dead:
                r.hincrby(DEAD_LETTER_COUNTS, self.stream, dead)
        r.xack(self.stream, self.group, *ids)
        r.xdel(self.stream, *ids)
        return len(ids)

    def _copy_insert(self, rows: list[models.Model]) -> None:
        meta = self.model._meta
        fields = [f for f in meta.concrete_fields if not f.primary_key]
        cols = ", ".join(connection.ops.quote_name(f.column) for f in fields)
        table = connection.ops.quote_name(meta.db_table)
        stage = connection.ops.quote_name(f"_copy_{meta.db_table}")
        conn = transaction.get_connection()  # the wrapper itself, not the per-call proxy
        prep = [(f.attname, f.get_db_prep_save) for f in fields]
        with conn.cursor() as cur:
            cur.execute(
                f"CREATE TEMP TABLE IF NOT EXISTS {stage} AS "
                f"SELECT {cols} FROM {table} WITH NO DATA"
            )
            cur.execute(f"TRUNCATE {stage}")
            with cur.cursor.copy(f"COPY {stage} ({cols}) FROM STDIN") as copy:
                for obj in rows:
                    copy.write_row([save(getattr(obj, name), conn) for name, save in prep])
            cur.execute(
                f"INSERT INTO {table} ({cols}) SELECT {cols} FROM {stage} ON CONFLICT DO NOTHING"
            )

    def _check_length(self, r: redis.Redis) -> None:
        cap = settings.SWITCHYARD_STREAM_MAXLEN
        length = r.xlen(self.stream)
        if cap and length >= NEAR_CAP * cap:
            log.error(
                "stream %s holds %d entries, %.0f%% of SWITCHYARD_STREAM_MAXLEN=%d: ingestion is "
                "behind, and past the cap the oldest entries (not yet stored) are trimmed",
                self.stream, length, 100 * length / cap, cap,
            )  # fmt: skip

    def drain(self, r: redis.Redis, *, max_batches: int = 20) -> int:
        """Move what is queued into the table; returns how many entries were handled."""
        self.ensure_group(r)
        self._check_length(r)
        handled = 0
        # Entries a dead consumer read but never acknowledged.
        _next, claimed, *_ = r.xautoclaim(
            self.stream, self.group, self.consumer, self.claim_idle_ms, "0-0", count=self.batch
        )
        handled += self._store(r, claimed)
        for _ in range(max_batches):
            resp = r.xreadgroup(self.group, self.consumer, {self.stream: ">"}, count=self.batch)
            if not resp:
                break
            entries = resp[0][1]
            handled += self._store(r, entries)
            if len(entries) < self.batch:
                break
        return handled


# ---- operators' actions on dead letters -------------------------------------------------------


def dead_letter_retry(*, letter: Any) -> str:
    """Store a dead-lettered entry again with its stream's ingestor: on success the letter is
    deleted and "" returned; otherwise the letter keeps the new reason, which is returned."""
    ingestor = INGESTORS.get(letter.stream)
    if ingestor is None:
        reason = f"no ingestor for stream {letter.stream!r}"
    else:
        try:
            ingestor.store_one({k: clean_text(v) for k, v in (letter.payload or {}).items()})
        except _OUTAGE_ERRORS:
            raise
        except _ROW_ERRORS as exc:
            reason = clean_text(f"{type(exc).__name__}: {exc}", 500)
        else:
            letter.delete()
            return ""
    letter.error = reason
    letter.save(update_fields=["error"])
    return reason


# ---- metrics ---------------------------------------------------------------------------------


class StreamCollector:
    """Prometheus collector read at scrape time from Redis: each stream's length and cap, and
    how many of its entries were dead-lettered."""

    def describe(self):
        return []

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        from switchyard.redis_client import get_redis

        length = GaugeMetricFamily(
            "switchyard_stream_length", "Entries queued on an ingestion stream.", labels=["stream"]
        )
        cap = GaugeMetricFamily(
            "switchyard_stream_maxlen", "The cap on each ingestion stream (entries)."
        )
        dead = CounterMetricFamily(
            "switchyard_ingest_dead_letters",
            "Stream entries that could not be stored and went to the dead-letter table.",
            labels=["stream"],
        )
        cap.add_metric([], settings.SWITCHYARD_STREAM_MAXLEN)
        try:
            r = get_redis()
            counts = {k.decode(): int(v) for k, v in r.hgetall(DEAD_LETTER_COUNTS).items()}
            for stream in sorted(INGESTORS):
                length.add_metric([stream], r.xlen(stream))
                dead.add_metric([stream], counts.get(stream, 0))
        except redis.RedisError:
            log.warning("stream metrics: Redis unreachable")
        yield length
        yield cap
        yield dead


_registered: set[int] = set()


def register_metrics(registry: Any) -> None:
    """Add :class:`StreamCollector` to ``registry`` once."""
    if id(registry) not in _registered:
        _registered.add(id(registry))
        registry.register(StreamCollector())
