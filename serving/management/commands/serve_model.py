"""manage.py serve_model: run a model worker (see serving.engine.server)."""

from django.core.management.base import BaseCommand

from serving.engine import server


class Command(BaseCommand):
    help = "Serve a model over an OpenAI-compatible HTTP API (continuous batching worker)."

    def add_arguments(self, parser):
        server.add_arguments(parser)

    def handle(self, *args, **o):
        server.serve(
            o["model"],
            host=o["host"],
            port=o["port"],
            embeddings=not o["no_embeddings"],
            kv_cache_bytes=o["kv_cache_mb"] * (1 << 20) if o["kv_cache_mb"] else None,
            max_num_seqs=o["max_num_seqs"],
            max_num_batched_tokens=o["max_num_batched_tokens"],
        )
