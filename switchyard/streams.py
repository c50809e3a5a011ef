"""Durable Redis stream → PostgreSQL ingestion, shared by usage records and request logs.

Producers XADD one entry per event (before the client gets its final bytes). A consumer
group reads in bulk, inserts with ``ON CONFLICT DO NOTHING`` on a unique id, then XACKs and
XDELs. If a consumer dies between insert and ack, another claims the entries after
``claim_idle_ms`` and inserts them again: the unique id makes that a no-op, so nothing is lost
and nothing is counted twice.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass

import redis
from django.db import IntegrityError, connection, models, transaction

log = logging.getLogger(__name__)


def stream_add(client, stream: str, fields: dict[str, str]):
    """XADD one entry, capping the stream near ``SWITCHYARD_STREAM_MAXLEN`` entries (approximate
    trimming: O(1) amortised) so that a stalled consumer cannot exhaust Redis's memory.
    ``client`` is a Redis client or pipeline, sync or async (the call is returned as is)."""
    from django.conf import settings

    return client.xadd(stream, fields, maxlen=settings.SWITCHYARD_STREAM_MAXLEN, approximate=True)


@dataclass
class StreamIngestor:
    stream: str
    group: str
    model: type[models.Model]
    build: Callable[[list[dict[str, str]]], list[models.Model]]
    batch: int = 5000
    claim_idle_ms: int = 60_000
    # COPY the batch into a temporary table, then INSERT … SELECT … ON CONFLICT DO NOTHING:
    # several times faster than a multi-row INSERT built by the ORM (plain columns only).
    copy: bool = False

    @property
    def consumer(self) -> str:
        return f"{socket.gethostname()}-{os.getpid()}"

    def ensure_group(self, r: redis.Redis) -> None:
        try:
            r.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _store(self, r: redis.Redis, entries: list[tuple[bytes, dict]]) -> int:
        if not entries:
            return 0
        ids = [eid for eid, _ in entries]
        fields = [{k.decode(): v.decode() for k, v in data.items()} for _, data in entries if data]
        rows = self.build(fields)
        try:
            with transaction.atomic():
                if self.copy:
                    self._copy_insert(rows)
                else:
                    self.model.objects.bulk_create(rows, ignore_conflicts=True, batch_size=1000)
        except IntegrityError:
            # One bad row (e.g. its tenant is gone) must not block the rest: insert one by
            # one and park the failures on a dead-letter stream with the reason.
            for row, data in zip(rows, fields, strict=True):
                try:
                    with transaction.atomic():
                        self.model.objects.bulk_create([row], ignore_conflicts=True)
                except IntegrityError as exc:
                    log.error("dead-lettering %s entry: %s", self.stream, exc)
                    r.xadd(f"{self.stream}:dead", {**data, "error": str(exc)[:500]})
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

    def drain(self, r: redis.Redis, *, max_batches: int = 20) -> int:
        """Move what is queued into the table; returns how many entries were handled."""
        self.ensure_group(r)
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
