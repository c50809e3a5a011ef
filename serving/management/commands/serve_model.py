"""manage.py serve_model: run a model worker (see serving.engine.server)."""

from django.core.management.base import BaseCommand

from serving.engine import server


class Command(BaseCommand):
    help = "Serve a model over an OpenAI-compatible HTTP API (continuous batching worker)."

    def add_arguments(self, parser):
        server.add_arguments(parser)

    def handle(self, *args, **o):
        server.serve(o["model"], **server.serve_options(o))
