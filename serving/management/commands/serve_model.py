"""manage.py serve_model: run a model worker (see serving.engine.cli)."""

from django.core.management.base import BaseCommand

from serving.engine import cli


class Command(BaseCommand):
    help = "Serve a model over an OpenAI-compatible HTTP API (continuous batching worker)."

    def add_arguments(self, parser):
        cli.add_arguments(parser)

    def handle(self, *args, **o):
        cli.serve(cli.worker_options(o))
